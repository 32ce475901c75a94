"""Membership inference: SaMIA through ``evaluate.load("samia")`` (needs only generated text) beside the
likelihood attacks of ``hf_ext.privacy``.

    python examples/membership_inference.py         # Gemma 3 270M on built-in famous (member) vs new texts
    python examples/membership_inference.py --tiny

The built-in set contrasts famous passages with texts written after the model's training, so part of what the
attacks detect is that shift (see the metric card's limitations); benchmarks/samia.py runs a controlled experiment.
"""

import evaluate
from _common import parser, setup

import hf_ext
from hf_ext.common.models import load_model
from hf_ext.privacy.demo import demo_texts

args = parser(__doc__.splitlines()[0]).parse_args()
path, _, _ = setup(args)
model, tokenizer = load_model(path)
texts, labels = demo_texts()

samia = evaluate.load("samia")  # by name, offline: `import hf_ext` put it in evaluate's module cache
result = samia.compute(references=texts, model=model, tokenizer=tokenizer, num_samples=4, prefix_ratio=0.5,
                       labels=labels)
print(f"SaMIA: AUROC {result['auroc']:.3f}, TPR@10%FPR {result['tpr_at_fpr']:.3f}")

# texts longer than the model's context are refused unless truncated (the tiny model's context is 256 tokens)
config = hf_ext.privacy.AttackConfig(max_length=model.config.max_position_embeddings)
results = hf_ext.privacy.attack(model, tokenizer, texts, labels, methods=["loss", "zlib", "min_k", "min_k_plus_plus"],
                                config=config, progress=False)
for name, r in results.items():
    print(f"{name}: AUROC {r.auroc:.3f}, TPR@10%FPR {r.tpr_at_fpr:.3f}")
