"""Draft-and-verify decoding through ``generate()``: a prompt-lookup draft and a trained EAGLE-style shallow draft,
the draft length chosen by the analytical throughput model (``num_draft_tokens="auto"``), streaming and stop
strings, and always the same greedy output as plain ``generate``.

    python examples/speculative_decoding.py         # Gemma 3 270M (trains a small draft: about a minute on a CPU)
    python examples/speculative_decoding.py --tiny
"""

import time

import torch
from _common import parser, setup
from transformers import TextStreamer

from hf_ext.common.models import load_model
from hf_ext.speculative import (
    CUSTOM_GENERATE_DIR,
    EagleTrainingConfig,
    PromptLookupDrafter,
    SpeculativeStats,
    generate,
    train_eagle_draft,
)

args = parser(__doc__.splitlines()[0]).parse_args()
path, text, out_dir = setup(args)
model, tokenizer = load_model(path)
prompt = ("def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n"
          "    return a * b\n\ndef div(a, b):\n")
inputs = tokenizer(prompt, return_tensors="pt")


def plain(n: int) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False)


def speculative(n: int, draft, stats: SpeculativeStats | None = None) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=n, do_sample=False, custom_generate=generate,
                          draft_model=draft, num_draft_tokens="auto", speculative_stats=stats)


# 1. prompt lookup: no model at all
with torch.no_grad():
    plain(4)  # untimed warm-up of both paths; the first "auto" call also times the target once
    speculative(4, PromptLookupDrafter())
    start = time.perf_counter()
    out_plain = plain(48)
    t_plain = time.perf_counter() - start
    stats = SpeculativeStats()
    start = time.perf_counter()
    fast = speculative(48, PromptLookupDrafter(), stats)
    t_fast = time.perf_counter() - start
assert torch.equal(out_plain, fast), "greedy speculative decoding must match plain greedy decoding"
print(tokenizer.decode(fast[0, inputs.input_ids.shape[1]:]))
print(f"prompt lookup: plain {t_plain:.2f} s, speculative {t_fast:.2f} s ({t_plain / t_fast:.2f}x); "
      f"{stats.iterations} verify steps for {stats.new_tokens} tokens, draft acceptance {stats.acceptance:.2f}")

# 2. a trained EAGLE-style draft: one layer reading the target's features, a frequency-ranked head
budget = dict(n_samples=8, seqlen=32, max_steps=10, draft_vocab_size=128) if args.tiny else dict(
    n_samples=16, seqlen=128, max_steps=40, draft_vocab_size=4096)
result = train_eagle_draft(model, tokenizer, EagleTrainingConfig(num_layers=1, data=text, **budget),
                           target_name=args.model, output_dir=str(out_dir / "eagle-draft"), progress=False)
print(f"EAGLE draft: loss {result.losses[0][1]:.2f} -> {result.losses[-1][1]:.2f}, saved to {out_dir / 'eagle-draft'}")
with torch.no_grad():
    stats = SpeculativeStats()
    eagle = speculative(48, result.draft, stats)
assert torch.equal(out_plain, eagle)
print(f"EAGLE draft: acceptance {stats.acceptance:.2f}, {stats.mean_accepted_length:.2f} tokens per verify step")

# 3. streaming and stop strings, as plain generate takes them (the custom_generate folder keeps every argument)
with torch.no_grad():
    streamed = model.generate(**inputs, max_new_tokens=24, do_sample=False, custom_generate=CUSTOM_GENERATE_DIR,
                              trust_remote_code=True, draft_model=result.draft, streamer=TextStreamer(tokenizer),
                              stop_strings=["\n\n"], tokenizer=tokenizer)
    ref = model.generate(**inputs, max_new_tokens=24, do_sample=False, stop_strings=["\n\n"], tokenizer=tokenizer)
assert torch.equal(streamed, ref)
print(f"streamed {streamed.shape[1] - inputs.input_ids.shape[1]} tokens with stop strings; verify steps done")
