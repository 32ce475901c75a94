import pytest
import torch

from hf_ext.common.generation import StopOnText, batched_generate, cut_at_stop
from hf_ext.common.models import tiny_model

PROMPTS = ["the model reads", "a token", "the cache keeps keys and values so that", "decoding runs fast on"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def test_batches_give_the_one_at_a_time_greedy_outputs(tiny):
    model, tok = tiny
    one = [batched_generate(model, tok, [p], 6)[0] for p in PROMPTS]
    assert batched_generate(model, tok, PROMPTS, 6, batch_size=3) == one
    assert len(set(one)) > 1 and all(one)  # distinct, non-empty continuations: the comparison means something


def test_padding_side_pad_token_and_mode_are_restored(tiny):
    model, tok = tiny
    model.train()
    pad, tok.pad_token = tok.pad_token, None
    tok.padding_side, tok.truncation_side = "right", "right"
    try:
        out = batched_generate(model, tok, PROMPTS[:2], 3, batch_size=2)
        assert len(out) == 2
        assert (tok.padding_side, tok.truncation_side, tok.pad_token, model.training) == ("right", "right", None, True)
    finally:
        tok.pad_token = pad
        model.eval()


def test_stop_strings_end_and_cut_continuations(tiny):
    model, tok = tiny
    full = batched_generate(model, tok, PROMPTS, 12, batch_size=4)
    # a stop string the greedy continuation of the first prompt holds a few characters in, and not before
    text = full[0]
    k = next(i for i in range(3, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].isprintable()
             and text.find(text[i : i + 2]) == i)
    word = text[k : k + 2]
    stopped = batched_generate(model, tok, PROMPTS, 12, batch_size=4, stop=[word])
    cut = batched_generate(model, tok, PROMPTS, 12, batch_size=4, stop=[word], cut_stop=True)
    assert word in stopped[0] and len(stopped[0]) < len(full[0]) and full[0].startswith(stopped[0])
    assert cut[0] == full[0][: full[0].index(word)] and word not in cut[0]
    assert cut_at_stop("a\nb\n\nc", ["\n\n", "\nb"]) == "a" and cut_at_stop("abc", ["x"]) == "abc"


def test_stop_on_text_checks_only_the_continuation(tiny):
    _, tok = tiny
    ids = tok(["stop here then go"], return_tensors="pt")["input_ids"]
    crit = StopOnText(tok, ["stop"], prompt_len=ids.shape[1] - 2)
    assert not crit(ids).item() and StopOnText(tok, ["go"], ids.shape[1] - 2)(ids).item()


def test_truncation_keeps_the_end_of_the_prompt(tiny):
    model, tok = tiny
    suffix = " the cache keeps keys and values so that decoding runs fast on"
    one, two = "a token " * 8 + suffix, "the quick brown fox jumps over the lazy dog" + suffix
    n = len(tok(suffix, add_special_tokens=False)["input_ids"]) - 2  # fewer than the shared end holds
    full = batched_generate(model, tok, [one, two], 8, batch_size=1)
    assert full[0] != full[1]  # the beginnings matter when they are kept
    cut = batched_generate(model, tok, [one, two], 8, batch_size=1, max_prompt_tokens=n)
    assert cut[0] == cut[1] and tok.truncation_side == "right"


def test_seeded_sampling_is_reproducible_and_bad_input_is_refused(tiny):
    model, tok = tiny
    a = batched_generate(model, tok, PROMPTS, 6, temperature=1.0, top_p=0.95, seed=3, batch_size=2)
    torch.manual_seed(123)  # what ran before does not matter
    assert batched_generate(model, tok, PROMPTS, 6, temperature=1.0, top_p=0.95, seed=3, batch_size=2) == a
    with pytest.raises(ValueError, match="max_new_tokens"):
        batched_generate(model, tok, PROMPTS, 0)
    with pytest.raises(ValueError, match="batch_size"):
        batched_generate(model, tok, PROMPTS, 2, batch_size=0)
