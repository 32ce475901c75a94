"""Zeroth-order (SPSA) gradient estimates from forward passes only, as pure functions.

The estimate of ``g = dL/dtheta`` at ``theta = 1`` (``theta`` the gates of one *unit*: a block's groups, or its
heads, or its channels) is ``g_hat = mean_m d_m z_m`` over measurements ``m``, with

* antithetic pairs: ``d_m = [L_m(1 + eps z_m) - L_m(1 - eps z_m)] / (2 eps)``; the unperturbed loss and every
  even-order term cancel (it is the control variate a central difference provides); one-sided
  ``[L_m(1 + eps z_m) - L_m(1)] / eps`` is the cheaper alternative;
* per-window directions: ``L_m`` is the loss of ONE calibration window, and every window of a query carries its
  own direction ``z_m``, so one query (two passes over the calibration data) gives ``n_windows`` measurements
  instead of one. Each measures that window's gradient ``g_w``, whose mean over windows is ``g``: this is the
  averaging over calibration batches, done inside the query;
* orthogonal directions: consecutive runs of ``d`` directions are the rows of a random rotation scaled to norm
  ``sqrt(d)`` (``E[z z^T] = I`` as for Rademacher directions, so the estimate stays unbiased), so a run of ``d``
  measurements spans the whole space; with ``M < d`` measurements the squared error is ``(d / M - 1) |g|^2``
  instead of ``(d - 1) / M |g|^2`` for independent directions (for a window-constant gradient).

The cosine of such an estimate with the true gradient grows like ``sqrt(M / d)`` (until window-to-window variation
dominates): a unit of ``d`` gates needs on the order of ``d`` measurements, which is why the estimate is taken per
block (a few thousand gates) rather than over every gate of the model at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

DIRECTIONS = ("orthogonal", "rademacher")
MAX_ORTHOGONAL_DIM = 8192
"""Above this many gates per unit a random rotation (``d x d``) costs too much memory: Rademacher directions."""


class DirectionStream:
    """Endless stream of perturbation directions in ``R^d`` with ``E[z z^T] = I`` (float64).

    ``orthogonal``: rows ``k*d .. k*d + d - 1`` form a Haar-random rotation scaled by ``sqrt(d)``. Rows are drawn as
    they are asked for (a Gaussian block projected off the run's earlier rows, then orthonormalized), so a budget of
    a few queries never pays for a whole ``d x d`` rotation.
    """

    def __init__(self, dim: int, kind: str, generator: torch.Generator):
        if kind not in DIRECTIONS:
            raise ValueError(f"directions must be one of {DIRECTIONS}, got {kind!r}.")
        self.dim, self.generator = dim, generator
        self.kind = kind if dim <= MAX_ORTHOGONAL_DIM else "rademacher"
        self._run = torch.empty(0, dim, dtype=torch.float64)  # unit-norm rows of the current orthogonal run

    def _orthogonal(self, n: int) -> torch.Tensor:
        g = torch.randn(n, self.dim, generator=self.generator, dtype=torch.float64)
        for _ in range(2):  # twice: one projection leaves rounding-size components along the earlier rows
            g = g - (g @ self._run.T) @ self._run
        q, r = torch.linalg.qr(g.T)
        rows = (q * torch.sign(torch.diagonal(r))).T
        self._run = torch.cat([self._run, rows])
        return rows * math.sqrt(self.dim)

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` directions, shape ``(n, d)``."""
        if self.kind == "rademacher":
            return torch.randint(0, 2, (n, self.dim), generator=self.generator).to(torch.float64) * 2 - 1
        out = []
        while n > 0:
            if len(self._run) == self.dim:
                self._run = self._run[:0]
            k = min(n, self.dim - len(self._run))
            out.append(self._orthogonal(k))
            n -= k
        return torch.cat(out)


@dataclass
class ZerothOrderEstimate:
    """``grad`` and its per-component standard error ``stderr`` (spread of the measurements / sqrt(M))."""

    grad: torch.Tensor
    stderr: torch.Tensor
    measurements: int
    passes: int


MIN_AUTO_QUERIES = 4
"""Floor of the automatic query count: a unit of a few gates (a block's heads) gets several measurements per
window, because there window-to-window variation, not the dimension, limits the estimate (and it is cheap)."""


def auto_queries(dim: int, n_windows: int, per_window: bool) -> int:
    """Queries for about ``dim`` measurements (one full orthogonal run over the unit's gates), at least 4."""
    return max(MIN_AUTO_QUERIES, math.ceil(dim / (n_windows if per_window else 1)))


def spsa_estimate(window_loss: Callable[[torch.Tensor | None], torch.Tensor], dim: int, n_windows: int, eps: float,
                  queries: int, generator: torch.Generator, directions: str = "orthogonal", per_window: bool = True,
                  antithetic: bool = True, base_loss: torch.Tensor | None = None,
                  progress: Callable[[], None] | None = None) -> ZerothOrderEstimate:
    """SPSA estimate of ``dL/dtheta`` at ``theta = 1`` from per-window losses (see the module doc).

    Args:
        window_loss: ``gates -> losses``; ``gates`` has shape ``(n_windows, dim)`` (row ``w`` gates window ``w``) or
            is ``None`` (unperturbed); returns the ``n_windows`` per-window losses.
        queries: Perturbed evaluations (each two calls of ``window_loss`` when antithetic, else one).
        per_window: Every window its own direction (else one direction per query, shared by all windows).
        base_loss: Unperturbed per-window losses for the one-sided difference (computed here when missing).
    """
    stream = DirectionStream(dim, directions, generator)
    total = torch.zeros(dim, dtype=torch.float64)
    total_sq = torch.zeros(dim, dtype=torch.float64)
    passes, m = 0, 0
    if not antithetic and base_loss is None:
        base_loss, passes = window_loss(None).double(), 1
    for _ in range(queries):
        z = stream.take(n_windows) if per_window else stream.take(1).expand(n_windows, dim)
        plus = window_loss((1 + eps * z).float()).double()
        if antithetic:
            diff = (plus - window_loss((1 - eps * z).float()).double()) / (2 * eps)
        else:
            diff = (plus - base_loss.double()) / eps
        passes += 2 if antithetic else 1
        contrib = diff[:, None] * z if per_window else diff.mean() * z[:1]
        total += contrib.sum(0)
        total_sq += (contrib**2).sum(0)
        m += len(contrib)
        if progress is not None:
            progress()
    grad = total / m
    var = (total_sq / m - grad**2).clamp_min(0) * (m / (m - 1)) if m > 1 else grad**2
    return ZerothOrderEstimate(grad.float(), (var / m).sqrt().float(), m, passes)
