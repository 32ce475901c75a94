"""Remove 20 % of the attention heads and MLP channels (MINI-LLM scores, forward-only gradient estimates) through
``from_pretrained``; the smaller model saves and reloads as an ordinary checkpoint.

    python examples/structured_pruning.py           # Gemma 3 270M, pydocs text
    python examples/structured_pruning.py --tiny
"""

from _common import parser, setup
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_ext

args = parser(__doc__.splitlines()[0]).parse_args()
path, text, out = setup(args)
window = 32 if args.tiny else 128
cfg = hf_ext.StructuredPruningConfig(ratio=0.2, criterion="mini_llm", calibration=text, n_samples=4, seqlen=window,
                                     spsa_queries=2)

tokenizer = AutoTokenizer.from_pretrained(path)
dense = AutoModelForCausalLM.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
params = [sum(p.numel() for p in m.parameters()) for m in (dense, model)]
print(f"parameters {params[0]:,} -> {params[1]:,}; removed {model.config.quantization_config.achieved_ratio:.1%} "
      "of the prunable ones")
for name, m in (("dense", dense), ("pruned", model)):
    res = hf_ext.perplexity(m, tokenizer, text, seqlen=window, max_tokens=8 * window)
    print(f"{name}: perplexity {res.perplexity:.2f}")

model.save_pretrained(out)
reloaded = AutoModelForCausalLM.from_pretrained(out)
assert sum(p.numel() for p in reloaded.parameters()) == params[1]
print(f"saved to {out}; reloaded with {params[1]:,} parameters")
