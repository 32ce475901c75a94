"""Draft-and-verify decoding through ``generate()``: prompt-lookup drafts, the draft length chosen by the analytical
throughput model (``num_draft_tokens="auto"``), and the same greedy output as plain ``generate``.

    python examples/speculative_decoding.py         # Gemma 3 270M
    python examples/speculative_decoding.py --tiny
"""

import time

import torch
from _common import parser, setup

from hf_ext.common.models import load_model
from hf_ext.speculative import PromptLookupDrafter, SpeculativeStats, generate

args = parser(__doc__.splitlines()[0]).parse_args()
path, _, _ = setup(args)
model, tokenizer = load_model(path)
prompt = ("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n"
          "    return a * b\n\ndef div(a, b):\n")
inputs = tokenizer(prompt, return_tensors="pt")


def plain(n: int) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def speculative(n: int, stats: SpeculativeStats | None = None) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False, custom_generate=generate,
                          draft_model=PromptLookupDrafter(), num_draft_tokens="auto", speculative_stats=stats)


with torch.no_grad():
    plain(4)  # untimed warm-up of both paths; the first "auto" call also times the target once
    speculative(4)
    start = time.perf_counter()
    out_plain = plain(48)
    t_plain = time.perf_counter() - start
    stats = SpeculativeStats()
    start = time.perf_counter()
    fast = speculative(48, stats)
    t_fast = time.perf_counter() - start

assert torch.equal(out_plain, fast), "greedy speculative decoding must match plain greedy decoding"
print(tokenizer.decode(fast[0, inputs.input_ids.shape[1]:]))
print(f"plain {t_plain:.2f} s, speculative {t_fast:.2f} s ({t_plain / t_fast:.2f}x); {stats.iterations} verify "
      f"steps for {stats.new_tokens} tokens, draft acceptance {stats.acceptance:.2f}")
