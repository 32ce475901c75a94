import math

import pytest
import torch
import torch.nn.functional as F

from hf_ext.common.models import tiny_model
from hf_ext.common.perplexity import make_windows, perplexity


def _hand_ppl(model, windows):
    nll, n = 0.0, 0
    for w in windows:
        logits = model(w[None]).logits[0]
        for t in range(1, len(w)):
            logp = F.log_softmax(logits[t - 1].double(), -1)
            nll -= logp[w[t]].item()
            n += 1
    return math.exp(nll / n), n


@pytest.mark.parametrize("family", ["opt", "gemma"])
def test_perplexity_matches_hand_computation(family, tiny_text_dir):
    model, tok = tiny_model(family)
    res = perplexity(model, tok, str(tiny_text_dir), seqlen=24, max_tokens=69, progress=False)
    ids = tok("\n\n".join(__import__("hf_ext").load_text(str(tiny_text_dir))), add_special_tokens=False).input_ids
    bos = tok.bos_token_id
    windows = [torch.tensor([bos] + ids[i * 23 : (i + 1) * 23]) for i in range(3)]
    expected, n = _hand_ppl(model, windows)
    assert res.n_windows == 3 and res.n_tokens == n == 69
    assert res.bos
    assert res.perplexity == pytest.approx(expected, rel=1e-4)
    assert "3 windows of 24 tokens" in res.protocol


def test_batching_does_not_change_the_result(tiny_text_dir):
    model, tok = tiny_model("llama")
    a = perplexity(model, tok, str(tiny_text_dir), seqlen=32, max_tokens=31 * 5, batch_size=1, progress=False)
    b = perplexity(model, tok, str(tiny_text_dir), seqlen=32, max_tokens=31 * 5, batch_size=3, progress=False)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-5)


def test_strided_windows_score_only_new_tokens():
    ids = torch.arange(100)
    wins = make_windows(ids, seqlen=10, stride=5, bos=None, max_windows=None)
    assert [s for _, s in wins][:3] == [9, 5, 5]
    assert torch.equal(wins[1][0], torch.arange(5, 15))
    with_bos = make_windows(ids, seqlen=10, stride=10, bos=999, max_windows=2)
    assert with_bos[0][0][0] == 999 and torch.equal(with_bos[1][0][1:], torch.arange(9, 18))


def test_bad_arguments(tiny_text_dir):
    model, tok = tiny_model("opt")
    with pytest.raises(ValueError, match="seqlen must be > 1"):
        perplexity(model, tok, str(tiny_text_dir), seqlen=0)
    with pytest.raises(ValueError, match="stride"):
        perplexity(model, tok, str(tiny_text_dir), seqlen=8, stride=9)
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tok, ["too short"], seqlen=512)
