"""The per-row loops of the weighted 1-D k-means, compiled with numba: k-means++ seeding and Lloyd iterations.

A row at a time, kept in L1: batched torch ops cost ``O(out * in)`` memory traffic per k-means++ draw (four minutes
for the 256 draws of a dedicated 8-bit Gemma 3 270M) and ``O(out * k log in)`` per Lloyd iteration; these loops do
the same arithmetic in cache, over ten times faster.

k-means++: each centroid after the first is drawn with probability ``f_j * D(w_j)**2`` (``D``: distance to the
nearest centroid so far), the first with probability ``f_j``. Each row has its own random stream (``seed + row``),
so a row's centroids do not depend on how the rows are chunked.

Lloyd on a sorted row: assignment is a merge of the row with the centroid midpoints (a weight equal to a midpoint
goes to the lower cluster), a cluster's weighted mean is a difference of the prefix sums, an empty cluster keeps its
centroid (``seed.fill_empty_clusters`` re-seeds it afterwards); a row stops when no assignment changes.
"""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True)
def _pick(w, p, total, u):
    target = u * total
    acc = 0.0
    for j in range(w.shape[0]):
        acc += p[j]
        if acc >= target:
            return w[j]
    return w[w.shape[0] - 1]


@numba.njit(cache=True)
def _kmeanspp_rows(w, f, k, seed, row_offset, out):
    n_rows, n = w.shape
    d2 = np.empty(n, dtype=np.float64)
    p = np.empty(n, dtype=np.float64)
    for r in range(n_rows):
        np.random.seed(seed + row_offset + r)
        wr, fr = w[r], f[r]
        f_total = 0.0
        for j in range(n):
            f_total += fr[j]
        c = _pick(wr, fr, f_total, np.random.random())
        out[r, 0] = c
        total = 0.0
        for j in range(n):
            d2[j] = (wr[j] - c) ** 2
            p[j] = fr[j] * d2[j]
            total += p[j]
        for i in range(1, k):
            u = np.random.random()
            # all remaining mass zero: fewer distinct values than clusters, draw by f (repeats a value)
            c = _pick(wr, p, total, u) if total > 0 else _pick(wr, fr, f_total, u)
            out[r, i] = c
            total = 0.0
            for j in range(n):
                d = (wr[j] - c) ** 2
                if d < d2[j]:
                    d2[j] = d
                    p[j] = fr[j] * d
                total += p[j]


def kmeans_plusplus(w: torch.Tensor, f: torch.Tensor, n_clusters: int, seed: int = 0,
                    row_offset: int = 0) -> torch.Tensor:
    """Centroids ``(out, n_clusters)``, sorted per row, for rows ``w`` (sorted or not) with weights ``f`` > 0.

    ``row_offset``: index of the first row in the whole matrix (its random stream is ``seed + row_offset + r``).
    """
    wn = np.ascontiguousarray(w.detach().cpu().double().numpy())
    fn = np.ascontiguousarray(f.detach().cpu().double().numpy())
    out = np.empty((wn.shape[0], n_clusters), dtype=np.float64)
    _kmeanspp_rows(wn, fn, n_clusters, seed, row_offset, out)
    return torch.from_numpy(out).to(device=w.device, dtype=torch.float32).sort(dim=1).values


@numba.njit(cache=True)
def _assign(w, c, bounds):
    k, n = c.shape[0], w.shape[0]
    j = 0
    bounds[0] = 0
    for i in range(k - 1):
        mid = (c[i] + c[i + 1]) / 2
        while j < n and w[j] <= mid:
            j += 1
        bounds[i + 1] = j
    bounds[k] = n


@numba.njit(cache=True)
def _lloyd_rows(w, cum_fw, cum_f, centroids, bounds, iterations):
    n_rows = w.shape[0]
    k = centroids.shape[1]
    new = np.empty(k + 1, dtype=np.int64)
    for r in range(n_rows):
        c = np.sort(centroids[r])
        b = bounds[r]
        _assign(w[r], c, b)
        for _ in range(iterations):
            for i in range(k):
                lo, hi = b[i], b[i + 1]
                den = cum_f[r, hi] - cum_f[r, lo]
                if den > 0:
                    c[i] = (cum_fw[r, hi] - cum_fw[r, lo]) / den
            c = np.sort(c)
            _assign(w[r], c, new)
            same = True
            for i in range(k + 1):
                if new[i] != b[i]:
                    same = False
                    break
            if same:
                break
            b[:] = new
        centroids[r] = c


def lloyd(w: torch.Tensor, cum_fw: torch.Tensor, cum_f: torch.Tensor, centroids: torch.Tensor,
          iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd from ``centroids`` on sorted rows ``w`` with prefix sums (leading zero column): ``(bounds int64
    (out, k + 1), centroids float32 (out, k))``."""
    c = np.ascontiguousarray(centroids.detach().cpu().double().numpy())
    bounds = np.empty((c.shape[0], c.shape[1] + 1), dtype=np.int64)
    _lloyd_rows(np.ascontiguousarray(w.detach().cpu().double().numpy()), cum_fw.detach().cpu().numpy(),
                cum_f.detach().cpu().numpy(), c, bounds, iterations)
    return (torch.from_numpy(bounds).to(w.device),
            torch.from_numpy(c).to(device=w.device, dtype=torch.float32))
