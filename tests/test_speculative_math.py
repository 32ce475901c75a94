"""Pure math of hf_ext.speculative: verification, lockstep batching, the analytical throughput model."""

import math

import pytest
import torch

from hf_ext.speculative import (
    AcceptanceTracker,
    LatencyProfile,
    best_lookahead,
    estimate_acceptance,
    expected_tokens,
    greedy_verify,
    leviathan_speedup,
    lockstep_tokens,
    plan_lookaheads,
    predicted_throughput,
    rejection_verify,
)
from hf_ext.speculative.config import SpeculativeConfig
from hf_ext.speculative.mixin import LookaheadController


@pytest.mark.parametrize(
    "alpha,gamma,expected",
    [(0.5, 2, 1.75), (0.8, 4, 3.3616), (0.0, 5, 1.0), (1.0, 7, 8.0), (0.9, 1, 1.9), (0.25, 3, 1.328125)],
)
def test_expected_tokens_hand_values(alpha, gamma, expected):
    assert expected_tokens(alpha, gamma) == pytest.approx(expected, rel=1e-12)


def test_expected_tokens_is_the_truncated_geometric_mean():
    alpha, gamma = 0.7, 5
    direct = sum(alpha**j for j in range(gamma + 1))
    assert expected_tokens(alpha, gamma) == pytest.approx(direct)


def test_leviathan_speedup_hand_value():
    assert leviathan_speedup(0.8, 4, 0.1) == pytest.approx(3.3616 / 1.4)
    # useful only if alpha > c: with alpha = c = 0.5 and gamma = 1, E = 1.5 and the cost is 1.5
    assert leviathan_speedup(0.5, 1, 0.5) == pytest.approx(1.0)


def test_bad_analytical_inputs_raise():
    with pytest.raises(ValueError, match="alpha"):
        expected_tokens(1.5, 2)
    with pytest.raises(ValueError, match="gamma"):
        expected_tokens(0.5, -1)
    with pytest.raises(ValueError, match="accepted length 5"):
        estimate_acceptance([5], 4)


def test_estimate_acceptance_hand_value_and_simulation():
    # [2 of 4] tested 3, [0 of 4] tested 1, [4 of 4] tested 4 -> 6 / 8
    assert estimate_acceptance([2, 0, 4], 4) == pytest.approx(0.75)
    gen = torch.Generator().manual_seed(0)
    alpha, gamma = 0.7, 6
    passes = torch.rand(20000, gamma, generator=gen) < alpha
    accepted = passes.long().cumprod(1).sum(1).tolist()
    assert estimate_acceptance(accepted, gamma) == pytest.approx(alpha, abs=0.01)
    tracker = AcceptanceTracker(prior_weight=0.0)
    tracker.observe(accepted, gamma)
    assert tracker.rate == pytest.approx(alpha, abs=0.01)
    assert tracker.mean_accepted_length == pytest.approx(expected_tokens(alpha, gamma), rel=0.02)


def test_latency_profile_interpolates_and_predicts():
    prof = LatencyProfile(target={1: 0.10, 9: 0.20}, draft=0.01)
    assert prof.target_latency(5) == pytest.approx(0.15)
    assert prof.target_latency(17) == pytest.approx(0.30)  # linear beyond the last measured size
    assert predicted_throughput(0.8, 4, 0.01, prof.target_latency(5)) == pytest.approx(3.3616 / 0.19)
    plans = plan_lookaheads(0.8, prof, 8)
    assert plans[0].tokens_per_second == pytest.approx(10.0)  # lookahead 0 is plain decoding
    assert best_lookahead(0.8, prof, 8).tokens_per_second == max(p.tokens_per_second for p in plans)


def test_best_lookahead_follows_draft_latency_and_batch():
    prof = LatencyProfile(target={1: 0.1, 17: 0.12})
    prof.draft = 0.0
    assert best_lookahead(0.99, prof, 16).gamma == 16  # free, almost always right draft: go long
    prof.draft = 0.2
    assert best_lookahead(0.9, prof, 16).gamma == 0  # a draft slower than the target never pays
    prof.draft = 0.005
    g1 = best_lookahead(0.8, prof, 16, batch_size=1).gamma
    g4 = best_lookahead(0.8, prof, 16, batch_size=4).gamma
    assert g4 < g1  # lockstep batches accept less, so shorter lookaheads


def test_auto_lookahead_adapts_to_observed_acceptance():
    cfg = SpeculativeConfig(prior_weight=1.0)
    prof = LatencyProfile(target={1: 0.1, 2: 0.105, 17: 0.2}, draft=0.004)
    tracker = AcceptanceTracker(prior_rate=0.5, prior_weight=1.0)
    ctl = LookaheadController("auto", cfg, prof, tracker)
    start = ctl.choose(1)
    tracker.observe([8] * 20, 8)  # everything accepted
    high = ctl.choose(1)
    tracker.observe([0] * 400, 8)  # then everything rejected
    low = ctl.choose(1)
    assert high > start and low < high and low <= 1
    assert LookaheadController(3, cfg, None, tracker).choose(1) == 3


def test_greedy_verify_and_lockstep():
    draft = torch.tensor([[5, 6, 7], [5, 9, 7], [1, 2, 3]])
    target = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8], [4, 2, 3, 0]])
    n, nxt = greedy_verify(draft, target)
    assert n.tolist() == [3, 1, 0] and nxt.tolist() == [8, 6, 4]
    active = torch.tensor([True, True, False])
    tokens = lockstep_tokens(draft, n, nxt, active)  # finished row 2 does not hold the batch back
    assert tokens.tolist() == [[5, 6], [5, 6], [1, 4]]
    assert lockstep_tokens(draft, n, nxt, torch.ones(3, dtype=torch.bool)).tolist() == [[5], [5], [4]]


def test_rejection_verify_accepts_identical_and_rejects_impossible():
    v = 6
    p = torch.softmax(torch.randn(2, 4, v), -1)
    tokens = torch.multinomial(p[:, :3].reshape(-1, v), 1).view(2, 3)
    n, _ = rejection_verify(tokens, p[:, :3], p)
    assert n.tolist() == [3, 3]  # q == p: always accepted
    p0 = p.clone()
    p0[:, 0, 2] = 0
    p0[:, 0] /= p0[:, 0].sum(-1, keepdim=True)
    n, nxt = rejection_verify(torch.full((2, 3), 2), None, p0)
    assert n.tolist() == [0, 0] and (nxt != 2).all()  # p(d)=0: rejected, residual excludes d


def test_rejection_sampling_single_step_distribution():
    """Emitted first token follows p, not q, for a deliberately bad draft (exact frequencies check)."""
    gen = torch.Generator().manual_seed(1)
    v, trials = 5, 60000
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.05, 0.05, 0.1, 0.3, 0.5])
    d = torch.multinomial(q.expand(trials, v), 1, replacement=True, generator=gen)
    n, nxt = rejection_verify(d, q.expand(trials, 1, v), p.expand(trials, 2, v), generator=gen)
    first = torch.where(n > 0, d[:, 0], nxt)
    freq = torch.bincount(first, minlength=v).float() / trials
    assert torch.allclose(freq, p, atol=0.01)
    assert math.isclose(float((n > 0).float().mean()), float(torch.minimum(p, q).sum()), abs_tol=0.01)


def test_auto_probes_only_while_unsure():
    cfg = SpeculativeConfig(probe_every=3, probe_until=10)
    prof = LatencyProfile(target={1: 0.1, 17: 0.2}, draft=0.5)  # a draft this slow never pays: plan 0
    unsure = LookaheadController("auto", cfg, prof, AcceptanceTracker())
    assert [unsure.choose(1) for _ in range(3)] == [0, 0, 1]  # the third zero iteration probes
    sure_tracker = AcceptanceTracker()
    sure_tracker.observe([1] * 20, 2)
    sure = LookaheadController("auto", cfg, prof, sure_tracker)
    assert [sure.choose(1) for _ in range(6)] == [0] * 6


def test_positional_acceptance_counts_and_hand_values():
    from hf_ext.speculative.analytical import PositionalAcceptance

    acc = PositionalAcceptance(prior_weight=0.0)
    acc.observe([4, 0, 2], gamma=4)  # tested positions: 4 | 1 | 3 ; passed: 4 | 0 | 2
    assert acc.tested == [3, 2, 2, 1] and acc.passed == [2, 2, 1, 1]
    assert acc.rate(0) == pytest.approx(2 / 3) and acc.rate(2) == pytest.approx(0.5)
    assert acc.rate(9) == acc.rate(3) == 1.0  # beyond the observed positions: the last observed rate
    # E(2) = 1 + a1 + a1 a2 = 1 + 2/3 + 2/3
    assert acc.expected_tokens(2) == pytest.approx(1 + 2 / 3 + 2 / 3)
    assert acc.expected_tokens(2, batch_size=2) == pytest.approx(1 + (2 / 3) ** 2 + (2 / 3) ** 2)
    with pytest.raises(ValueError, match="outside"):
        acc.observe([5], gamma=4)


def test_positional_acceptance_reduces_to_iid_and_captures_runs():
    from hf_ext.speculative.analytical import PositionalAcceptance

    flat = PositionalAcceptance(passed=[7.0] * 6, tested=[10.0] * 6, prior_weight=0.0)
    for g in range(7):
        assert flat.expected_tokens(g) == pytest.approx(expected_tokens(0.7, g))
        assert flat.expected_tokens(g, 3) == pytest.approx(expected_tokens(0.7 ** 3, g))
    # all-or-nothing stretches (prompt lookup): half the iterations accept all 8, half none
    runs = PositionalAcceptance(prior_weight=0.0)
    runs.observe([8, 0] * 50, gamma=8)
    alpha = estimate_acceptance([8, 0] * 50, 8)
    assert runs.expected_tokens(8) == pytest.approx(1 + 0.5 * 8)  # exact for this process
    assert abs(expected_tokens(alpha, 8) - 5.0) > 0.15 * 5.0  # the i.i.d. model is off by more than 15 %
    profile = LatencyProfile(target={1: 0.1, 9: 0.2}, draft=0.001)
    plans = plan_lookaheads(runs, profile, 8)
    assert plans[8].expected_tokens == pytest.approx(5.0) and best_lookahead(runs, profile, 8).gamma == 8


def test_stats_leave_both_prefills_out_of_decode_time():
    from hf_ext.speculative import SpeculativeStats

    st = SpeculativeStats(gammas=[4, 4], seconds=3.0, prefill_seconds=1.0, draft_prefill_seconds=0.5,
                          target_seconds=1.0 + 0.8, draft_step_seconds=[0.05] * 8, new_tokens=11)
    assert st.decode_tokens_per_second == pytest.approx(10 / 1.5)
    assert st.draft_step == pytest.approx(0.05)
    assert st.overhead == pytest.approx((1.5 - 0.8 - 0.4) / 2)


def test_predicted_throughput_mix_reduces_to_fixed_lookahead():
    from hf_ext.speculative import predicted_throughput_mix

    profile = LatencyProfile(target={1: 0.10, 5: 0.15}, draft=0.01, overhead=0.002)
    fixed = plan_lookaheads(0.6, profile, 4)[4].tokens_per_second
    assert predicted_throughput_mix(0.6, [4, 4, 4], 0.01, profile) == pytest.approx(fixed)
    mixed = predicted_throughput_mix(0.6, [4, 0], 0.01, profile)
    e = expected_tokens(0.6, 4) + 1.0
    assert mixed == pytest.approx(e / (4 * 0.01 + 0.15 + 0.10 + 2 * 0.002))
    with pytest.raises(ValueError, match="empty"):
        predicted_throughput_mix(0.6, [], 0.01, profile)
