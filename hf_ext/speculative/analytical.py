"""The throughput model of speculative decoding, fed with latencies measured on the user's hardware.

* Leviathan et al.: with per-token acceptance rate ``a`` and lookahead ``g`` the expected number of tokens an
  iteration emits is ``E = (1 - a^(g+1)) / (1 - a)`` (``g + 1`` when ``a = 1``), and the wall-time speedup over
  plain decoding is ``E / (g * c + 1)`` with ``c = t_draft / t_target``.
* Yan et al. ("Decoding Speculative Decoding"): throughput = ``TAR(g) / (g * T_draft + T_target(g))``, TAR the mean
  tokens per iteration including the bonus token. The paper's exact equation is not verified (REFERENCES.md); this
  is the form consistent with its accounting. Our choices, stated here: ``T_target(g)`` is the measured latency of
  one target forward over ``g + 1`` tokens (interpolated linearly between measured sizes), ``T_draft`` the measured
  latency of one draft step, and a measured per-iteration overhead (sampling, bookkeeping) is added to the
  denominator; lookahead 0 is plain decoding, ``1 / (T_target(0) + overhead)``.
* Batches advance in lockstep (see :mod:`.verify`): with independent rows, the smallest accepted length of ``B``
  rows is a truncated geometric with rate ``a ** B``, so the batch model uses ``E(a ** B, g)`` (tokens per row).
* Acceptance by position (:class:`PositionalAcceptance`): a draft whose proposals are not i.i.d. (prompt lookup:
  a matching n-gram tends to be right for a whole stretch, or wrong from its first token) gets one conditional rate
  per draft position, ``a_j = P(token j accepted | tokens < j accepted)``, and ``E = 1 + sum_k (prod_{j<=k} a_j)^B``
  (the i.i.d. formula is the case of equal rates). Positions beyond those observed reuse the last observed rate.
* Acceptance is estimated from observed accepted lengths: an iteration that accepted ``n`` of ``g`` tokens
  tested ``min(n + 1, g)`` positions and passed ``n`` of them; ``a = passed / tested`` (the maximum-likelihood
  estimate of the i.i.d. acceptance model), with a weak prior for the first iterations.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field


def expected_tokens(alpha: float, gamma: int) -> float:
    """Expected tokens per iteration ``(1 - a^(g+1)) / (1 - a)``; ``g + 1`` at ``a = 1``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}.")
    if alpha >= 1.0 - 1e-12:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def leviathan_speedup(alpha: float, gamma: int, cost_ratio: float) -> float:
    """Wall-time speedup ``E / (g * c + 1)`` with ``c = t_draft / t_target`` (Leviathan et al., Theorem 3.8)."""
    if cost_ratio < 0:
        raise ValueError(f"cost_ratio must be >= 0, got {cost_ratio}.")
    return expected_tokens(alpha, gamma) / (gamma * cost_ratio + 1.0)


def estimate_acceptance(accepted: Iterable[int], gammas: Iterable[int] | int, prior: tuple[float, float] = (0.0, 0.0)
                        ) -> float:
    """Per-token acceptance rate from observed accepted lengths.

    Args:
        accepted: accepted draft tokens per iteration (bonus token excluded).
        gammas: the lookahead of each iteration, or one lookahead for all.
        prior: pseudo-counts ``(passed, tested)`` added to the observations.

    Returns:
        ``passed / tested``; 0 when nothing was tested.
    """
    acc = list(accepted)
    gs = [gammas] * len(acc) if isinstance(gammas, int) else list(gammas)
    if len(gs) != len(acc):
        raise ValueError(f"{len(acc)} accepted lengths but {len(gs)} lookaheads.")
    passed, tested = prior
    for n, g in zip(acc, gs):
        if not 0 <= n <= g:
            raise ValueError(f"accepted length {n} outside [0, {g}].")
        passed += n
        tested += min(n + 1, g)
    return passed / tested if tested > 0 else 0.0


@dataclass
class PositionalAcceptance:
    """Per-position conditional acceptance rates from observed accepted lengths (see the module docstring).

    An iteration that accepted ``n`` of ``g`` tokens tested positions ``1 .. min(n + 1, g)`` and passed ``1 .. n``.
    Each rate is blended with ``prior_rate`` at weight ``prior_weight`` (tested positions).
    """

    passed: list[float] = field(default_factory=list)
    tested: list[float] = field(default_factory=list)
    prior_rate: float = 0.5
    prior_weight: float = 1.0

    def observe(self, accepted: Iterable[int], gamma: int) -> None:
        for n in accepted:
            n = int(n)
            if not 0 <= n <= gamma:
                raise ValueError(f"accepted length {n} outside [0, {gamma}].")
            for j in range(min(n + 1, gamma)):
                while len(self.tested) <= j:
                    self.tested.append(0.0)
                    self.passed.append(0.0)
                self.tested[j] += 1
                self.passed[j] += j < n

    def rate(self, position: int) -> float:
        """Conditional acceptance of draft position ``position`` (0-based)."""
        if not self.tested:
            return self.prior_rate
        j = min(position, len(self.tested) - 1)
        return (self.passed[j] + self.prior_weight * self.prior_rate) / (self.tested[j] + self.prior_weight)

    def expected_tokens(self, gamma: int, batch_size: int = 1) -> float:
        """Expected tokens per row and iteration at lookahead ``gamma`` (bonus included), batch in lockstep."""
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        e, p = 1.0, 1.0
        for j in range(gamma):
            p *= self.rate(j)
            e += p ** batch_size
        return e


def _expected(alpha, gamma: int, batch_size: int) -> float:
    if isinstance(alpha, PositionalAcceptance):
        return alpha.expected_tokens(gamma, batch_size)
    return expected_tokens(alpha ** batch_size, gamma)


def predicted_throughput(alpha: float | PositionalAcceptance, gamma: int, t_draft: float, t_target: float,
                         overhead: float = 0.0, batch_size: int = 1) -> float:
    """Tokens per second per row: ``E(a^B, g) / (g * T_draft + T_target + overhead)``."""
    denom = gamma * t_draft + t_target + overhead
    if denom <= 0:
        raise ValueError(f"latencies must be positive, got T_draft={t_draft}, T_target={t_target}.")
    return _expected(alpha, gamma, batch_size) / denom


def predicted_throughput_mix(alpha: float | PositionalAcceptance, gammas: Iterable[int], t_draft: float,
                             profile: LatencyProfile, batch_size: int = 1) -> float:
    """Throughput when the lookahead varies by iteration (prompt lookup proposes only as far as its match goes):
    expected tokens over expected seconds across the observed lookaheads ``gammas``."""
    gs = list(gammas)
    if not gs:
        raise ValueError("gammas must not be empty.")
    tokens = sum(_expected(alpha, g, batch_size) for g in gs)
    seconds = sum(g * t_draft + profile.target_latency(g + 1) + profile.overhead for g in gs)
    return tokens / seconds


@dataclass
class LatencyProfile:
    """Measured latencies (seconds) of one target forward by number of scored tokens, and of one draft step.

    New measurements are blended in with an exponential moving average (weight ``ema``), so the profile follows
    the machine's load during a generation.
    """

    target: dict[int, float] = field(default_factory=dict)
    draft: float | None = None
    overhead: float = 0.0
    ema: float = 0.3

    def update_target(self, num_tokens: int, seconds: float) -> None:
        old = self.target.get(num_tokens)
        self.target[num_tokens] = seconds if old is None else (1 - self.ema) * old + self.ema * seconds

    def update_draft(self, seconds: float) -> None:
        self.draft = seconds if self.draft is None else (1 - self.ema) * self.draft + self.ema * seconds

    def update_overhead(self, seconds: float) -> None:
        self.overhead = (1 - self.ema) * self.overhead + self.ema * max(seconds, 0.0)

    def target_latency(self, num_tokens: int) -> float:
        """Latency of a target forward over ``num_tokens``, linear between (and beyond) measured sizes."""
        if not self.target:
            raise ValueError("No target latency measured yet.")
        ks = sorted(self.target)
        if num_tokens in self.target:
            return self.target[num_tokens]
        if len(ks) == 1:
            return self.target[ks[0]] * max(num_tokens, 1) / ks[0] if num_tokens > ks[0] else self.target[ks[0]]
        i = bisect.bisect_left(ks, num_tokens)
        lo, hi = (ks[0], ks[1]) if i == 0 else (ks[-2], ks[-1]) if i == len(ks) else (ks[i - 1], ks[i])
        t_lo, t_hi = self.target[lo], self.target[hi]
        return max(t_lo + (t_hi - t_lo) * (num_tokens - lo) / (hi - lo), 1e-9)


@dataclass
class LookaheadPlan:
    """The analytical model's prediction for one lookahead."""

    gamma: int
    expected_tokens: float
    seconds_per_iteration: float
    tokens_per_second: float


def plan_lookaheads(alpha: float | PositionalAcceptance, profile: LatencyProfile, max_gamma: int, batch_size: int = 1,
                    draft_latency: float | None = None) -> list[LookaheadPlan]:
    """Predicted throughput (tokens/s per row) for every lookahead ``0..max_gamma``; ``alpha`` is an i.i.d. rate or
    a :class:`PositionalAcceptance`."""
    t_d = profile.draft if draft_latency is None else draft_latency
    if t_d is None:
        raise ValueError("No draft latency measured yet.")
    plans = []
    for g in range(max_gamma + 1):
        secs = g * t_d + profile.target_latency(g + 1) + profile.overhead
        e = _expected(alpha, g, batch_size)
        plans.append(LookaheadPlan(g, e, secs, e / secs))
    return plans


def best_lookahead(alpha: float | PositionalAcceptance, profile: LatencyProfile, max_gamma: int, batch_size: int = 1,
                   min_gamma: int = 0) -> LookaheadPlan:
    """The lookahead in ``[min_gamma, max_gamma]`` with the highest predicted throughput."""
    plans = plan_lookaheads(alpha, profile, max_gamma, batch_size)[min_gamma:]
    return max(plans, key=lambda p: p.tokens_per_second)


@dataclass
class AcceptanceTracker:
    """Running acceptance estimate (see :func:`estimate_acceptance`), seeded with a weak prior."""

    prior_rate: float = 0.5
    prior_weight: float = 4.0
    passed: float = 0.0
    tested: float = 0.0
    iterations: int = 0
    emitted: int = 0

    def observe(self, accepted: Iterable[int], gamma: int) -> None:
        for n in accepted:
            n = int(n)
            self.passed += n
            self.tested += min(n + 1, gamma)
            self.iterations += 1
            self.emitted += n + 1

    @property
    def rate(self) -> float:
        w = self.prior_weight
        return (self.passed + w * self.prior_rate) / (self.tested + w)

    @property
    def observed_rate(self) -> float:
        """The estimate from observations alone (0 before any)."""
        return self.passed / self.tested if self.tested else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Mean tokens per iteration and row, bonus token included (TAR)."""
        return self.emitted / self.iterations if self.iterations else 0.0
