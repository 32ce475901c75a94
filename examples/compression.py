"""Prune a causal LM to 50 % sparsity (MRP allocation, Wanda metric) through ``from_pretrained``, measure it, save
it, and reload it with plain ``from_pretrained``; then the same from disk, one block in memory.

    python examples/compression.py                  # Gemma 3 270M, pydocs text (about 2 minutes on a laptop CPU)
    python examples/compression.py --tiny           # seconds, random weights
"""

import torch
from _common import parser, setup
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_ext
from hf_ext.compression import record_eval

args = parser(__doc__.splitlines()[0]).parse_args()
path, text, out = setup(args)
window = 32 if args.tiny else 256
cfg = hf_ext.CompressionConfig(sparsity=0.5, allocation="mrp", metric="wanda", calibration=text, n_samples=8,
                               seqlen=window)

tokenizer = AutoTokenizer.from_pretrained(path)
dense = AutoModelForCausalLM.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)  # calibrates and prunes
print(model.compression_report.to_markdown().split("\n\n")[0])

for name, m in (("dense", dense), ("50 % sparse", model)):
    res = hf_ext.perplexity(m, tokenizer, text, seqlen=window, max_tokens=8 * window)
    print(f"{name}: perplexity {res.perplexity:.2f} ({res.protocol})")
record_eval(model, "perplexity", res.perplexity, res.protocol)  # goes into config.json and the model card

model.save_pretrained(out)
tokenizer.save_pretrained(out)
reloaded = AutoModelForCausalLM.from_pretrained(out)  # no extra arguments: `import hf_ext` registered the method
ids = tokenizer("The standard library", return_tensors="pt").input_ids
with torch.no_grad():
    assert torch.equal(reloaded(ids).logits, model(ids).logits)
print(f"saved to {out} and reloaded bit for bit")

# A model larger than memory: stream the checkpoint from disk, one decoder block at a time.
# (hf-ext compress MODEL --low-memory --out DIR does the same; benchmarks/compression_disk.py measures its memory.)
report = hf_ext.compress_checkpoint(path, out.with_name("from_disk"), cfg)
print(f"from disk: sparsity {report.achieved_sparsity:.4f}, saved to {out.with_name('from_disk')}")
