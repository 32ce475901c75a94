"""Offline request traces: Poisson, gamma (burstiness) and a diurnal per-minute curve, all deterministic from a seed.

Gamma inter-arrivals follow vLLM's ``bench serve --burstiness``: shape = burstiness, mean = 1 / rate, so 1.0 is
Poisson and smaller values are burstier. The diurnal curve imitates the Azure Functions trace's per-minute invocation
counts (a daily sine with a peak, multiplicative minute-level noise and rare spikes), generated here offline: the
trace itself is not shipped. Per-minute counts are replayed as a piecewise-constant Poisson process. Every trace is
bounded in count (``max_requests``) and time (``duration_s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATTERNS = ("poisson", "gamma", "diurnal")


@dataclass
class Trace:
    """Arrival times (seconds from 0, increasing), task index of each request and its relative deadline (s)."""

    times: np.ndarray
    tasks: np.ndarray
    deadlines: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    @property
    def mean_rate(self) -> float:
        return len(self.times) / max(float(self.times[-1]), 1e-9) if len(self.times) else 0.0


def poisson_times(rate: float, duration_s: float, rng: np.random.Generator, max_requests: int) -> np.ndarray:
    return gamma_times(rate, 1.0, duration_s, rng, max_requests)


def gamma_times(rate: float, burstiness: float, duration_s: float, rng: np.random.Generator,
                max_requests: int) -> np.ndarray:
    """Arrival times with gamma inter-arrivals of shape ``burstiness`` and mean ``1 / rate``."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate and burstiness must be > 0, got {rate} and {burstiness}.")
    n = int(min(max_requests, np.ceil(rate * duration_s * 1.5 + 10)))
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    times = np.cumsum(gaps)
    return times[times < duration_s][:max_requests]


def diurnal_counts(mean_rate: float, minutes: int, rng: np.random.Generator, period_min: float = 24.0,
                   amplitude: float = 0.6, noise: float = 0.25, spike_prob: float = 0.03,
                   spike_factor: float = 3.0) -> np.ndarray:
    """Per-minute expected request counts of an Azure-Functions-like day, compressed to ``period_min`` minutes.

    A sine of relative ``amplitude`` around ``mean_rate`` (requests per second), lognormal minute noise of sigma
    ``noise`` and spikes of ``spike_factor`` with probability ``spike_prob`` per minute (our choices: the trace's
    shape, not its numbers). Normalised so the mean rate over the curve is ``mean_rate``.
    """
    t = np.arange(minutes)
    phase = rng.uniform(0, 2 * np.pi)
    base = 1.0 + amplitude * np.sin(2 * np.pi * t / period_min + phase)
    base = base * rng.lognormal(-0.5 * noise**2, noise, size=minutes)
    base = base * np.where(rng.random(minutes) < spike_prob, spike_factor, 1.0)
    return base / base.mean() * mean_rate * 60.0


def piecewise_poisson_times(counts_per_minute: np.ndarray, rng: np.random.Generator, max_requests: int,
                            minute_s: float = 60.0) -> np.ndarray:
    """Replay per-minute counts as a Poisson process with constant rate inside each minute (``minute_s`` seconds
    long: pass less than 60 to compress a curve in time)."""
    out = []
    for i, c in enumerate(counts_per_minute):
        k = rng.poisson(c)
        out.append(np.sort(rng.uniform(i * minute_s, (i + 1) * minute_s, size=k)))
    times = np.concatenate(out) if out else np.zeros(0)
    return times[:max_requests]


def make_trace(pattern: str, rate: float, duration_s: float, rng: np.random.Generator, *, max_requests: int,
               task_mix: list[float], deadlines: list[float], burstiness: float = 1.0,
               minute_s: float = 6.0) -> Trace:
    """One bounded trace of ``pattern`` at mean ``rate`` requests/s; tasks drawn from ``task_mix``.

    For ``diurnal`` a "minute" of the curve lasts ``minute_s`` seconds of simulated time (our default 6 s: a day's
    shape in a few simulated minutes).
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}.")
    if pattern == "poisson":
        times = poisson_times(rate, duration_s, rng, max_requests)
    elif pattern == "gamma":
        times = gamma_times(rate, burstiness, duration_s, rng, max_requests)
    else:
        minutes = max(1, int(np.ceil(duration_s / minute_s)))
        counts = diurnal_counts(rate, minutes, rng) * (minute_s / 60.0)
        times = piecewise_poisson_times(counts, rng, max_requests, minute_s=minute_s)
        times = times[times < duration_s]
    mix = np.asarray(task_mix, dtype=float)
    tasks = rng.choice(len(mix), size=len(times), p=mix / mix.sum())
    return Trace(times=times.astype(np.float64), tasks=tasks.astype(np.int64),
                 deadlines=np.asarray(deadlines, dtype=np.float64)[tasks])
