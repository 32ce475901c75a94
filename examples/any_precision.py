"""One any-precision checkpoint holding 3- to 6-bit models: switch the width at run time, save, and reload only the
widths you need.

    python examples/any_precision.py                # Gemma 3 270M, pydocs text
    python examples/any_precision.py --tiny
"""

from _common import parser, setup
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_ext

args = parser(__doc__.splitlines()[0]).parse_args()
path, text, out = setup(args)
window = 32 if args.tiny else 256
cfg = hf_ext.AnyPrecisionConfig(seed_bits=3, max_bits=6, calibration=text, n_samples=4, seqlen=window,
                                kmeans_iterations=10, split_iterations=5)

tokenizer = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
for bits in model.precisions:
    model.set_precision(bits)  # no reload: the k-bit codes are the top k bitplanes
    res = hf_ext.perplexity(model, tokenizer, text, seqlen=window, max_tokens=8 * window)
    print(f"{bits}-bit: perplexity {res.perplexity:.2f}")

model.save_pretrained(out)
tokenizer.save_pretrained(out)
small = AutoModelForCausalLM.from_pretrained(out, quantization_config=hf_ext.AnyPrecisionConfig(precisions=[3, 4]))
print(f"saved to {out}; reloaded holding {small.precisions} bits only")
