"""What SaMIA's sampling costs (tokens generated, counted by hand on a tiny model) and the paired bootstrap of the
AUROC difference between two attacks."""

import numpy as np
import pytest
import torch

from hf_ext.common.models import tiny_model
from hf_ext.privacy import (
    SamiaConfig,
    SamplingStats,
    attack,
    auroc,
    auroc_difference,
    count_new_tokens,
    generate_samples,
    split_prefix,
)
from hf_ext.privacy.metrics import _pair_wins

TEXTS = [
    "The quick brown fox jumps over the lazy dog and runs away",
    "Python is a programming language that lets you work quickly and integrate systems well",
    "Sparse weights save memory",
    "A function returns a value and a module groups functions and classes",
]


def test_count_new_tokens_by_hand():
    eos, pad = 9, 0
    new = torch.tensor([
        [5, 6, 7, 8],      # no EOS: all 4 positions generated
        [5, eos, 0, 0],    # EOS at 1: 2 generated (EOS counted), then generate's padding
        [eos, 0, 0, 0],    # EOS first: 1
        [5, 6, 7, eos],    # EOS last: 4
    ])
    assert count_new_tokens(new, [4, 4, 4, 4], [eos]) == (4 + 2 + 1 + 4, 4 + 2 + 1 + 4)
    assert count_new_tokens(new, [2, 3, 1, 3], [eos]) == (11, 2 + 2 + 1 + 3)  # kept = min(length, budget)
    assert count_new_tokens(new, [4, 4, 4, 4], [3, eos]) == (11, 11)  # any of several EOS ids
    assert count_new_tokens(new, [4, 4, 4, 4]) == (16, 16)  # no EOS id: every position counts
    assert pad == 0
    with pytest.raises(ValueError, match="one budget per sequence"):
        count_new_tokens(new, [4, 4])


@pytest.fixture()
def tiny_no_eos():
    model, tok = tiny_model("llama", seed=0)
    model.generation_config.eos_token_id = None  # generate runs every step: the counts are known in advance
    return model, tok


def test_generated_tokens_equal_the_hand_count(tiny_no_eos):
    model, tok = tiny_no_eos
    cfg = SamiaConfig(num_samples=3, batch_size=6, seed=0)  # 6 // 3 = 2 texts per generate call
    budgets = [len(tok(" " + " ".join(split_prefix(t)[1]), add_special_tokens=False).input_ids) for t in TEXTS]
    assert len(set(budgets)) > 1  # different budgets, so a batch generates past the shorter one
    samples, stats = generate_samples(model, tok, TEXTS, cfg, progress=False, return_stats=True)
    raw = 3 * 2 * max(budgets[0:2]) + 3 * 2 * max(budgets[2:4])
    assert isinstance(stats, SamplingStats)
    assert (stats.texts, stats.sequences, stats.generate_calls) == (4, 12, 2)
    assert stats.generated_tokens == raw == stats.padded_positions
    assert stats.kept_tokens == 3 * sum(budgets) < raw
    assert stats.seconds > 0 and stats.ms_per_generated_token == pytest.approx(1000 * stats.seconds / raw)
    assert stats.to_dict()["kept_tokens"] == 3 * sum(budgets)
    # Backward compatible: without return_stats the same samples come back alone.
    assert generate_samples(model, tok, TEXTS, cfg, progress=False) == samples


def test_fixed_budget_counts_and_attack_field(tiny_no_eos):
    model, tok = tiny_no_eos
    cfg = SamiaConfig(num_samples=2, max_new_tokens=5, batch_size=4, seed=0)
    res = attack(model, tok, TEXTS, [1, 0, 1, 0], methods=["loss", "samia", "samia_zlib"], samia_config=cfg,
                 progress=False)
    st = res["samia"].sampling
    assert st is res["samia_zlib"].sampling and res["loss"].sampling is None  # one shared sampling run
    assert st.generated_tokens == st.kept_tokens == 4 * 2 * 5 and st.generate_calls == 2
    assert res["samia"].to_dict()["sampling"]["generated_tokens"] == 40
    assert res["loss"].to_dict()["sampling"] is None


def test_eos_stops_the_count():
    """With the model's EOS, a sequence that ends early counts up to its EOS; kept never exceeds generated."""
    model, tok = tiny_model("llama", seed=0)
    eos = model.generation_config.eos_token_id
    assert eos is not None
    cfg = SamiaConfig(num_samples=4, max_new_tokens=12, batch_size=16, seed=0)
    _, stats = generate_samples(model, tok, TEXTS, cfg, progress=False, return_stats=True)
    assert stats.kept_tokens == stats.generated_tokens <= stats.padded_positions == stats.sequences * 12


def test_auroc_difference_point_and_interval():
    rng = np.random.default_rng(1)
    labels = [1] * 30 + [0] * 30
    strong = list(np.r_[rng.normal(2, 1, 30), rng.normal(0, 1, 30)])
    weak = list(np.r_[rng.normal(0.3, 1, 30), rng.normal(0, 1, 30)])
    d = auroc_difference(strong, weak, labels, n_boot=500, seed=0)
    assert d["difference"] == pytest.approx(auroc(strong, labels) - auroc(weak, labels))
    assert 0 < d["low"] < d["difference"] < d["high"]  # clearly better: the interval excludes 0
    same = auroc_difference(strong, strong, labels, n_boot=50)
    assert same["difference"] == same["low"] == same["high"] == 0.0
    assert auroc_difference(strong, weak, labels, n_boot=500, seed=0) == d  # seeded
    with pytest.raises(ValueError, match="must match"):
        auroc_difference(strong, weak[:-1], labels)
    with pytest.raises(ValueError, match="n_boot"):
        auroc_difference(strong, weak, labels, n_boot=0)


def test_resample_auroc_by_counts_matches_explicit_resample():
    """The count trick equals roc_auc_score on the explicitly resampled texts (ties included)."""
    rng = np.random.default_rng(2)
    scores = np.round(rng.normal(size=20), 1)  # rounding makes ties
    labels = np.array([1] * 8 + [0] * 12)
    pos_idx, neg_idx = rng.integers(0, 8, 8), 8 + rng.integers(0, 12, 12)
    c_pos, c_neg = np.bincount(pos_idx, minlength=8), np.bincount(neg_idx - 8, minlength=12)
    by_counts = c_pos @ _pair_wins(scores, labels) @ c_neg / (8 * 12)
    idx = np.r_[pos_idx, neg_idx]
    assert by_counts == pytest.approx(auroc(scores[idx], labels[idx]))
