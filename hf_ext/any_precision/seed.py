"""Seed model: per-row weighted 1-D k-means (SqueezeLLM-style sensitivity-weighted non-uniform quantization).

Each output row of a weight matrix gets its own ``2**bits`` centroids minimising ``sum_j f_j (w_j - c(w_j))**2``,
where ``f`` is the diagonal Fisher information (squared gradients of the calibration loss). All rows are solved at
once, and in one dimension cheaply: each row is sorted once, a cluster is then a contiguous range of the sorted row,
nearest-centroid assignment is a ``searchsorted`` of the centroid midpoints (``2**bits`` queries per row, not one per
weight) and a cluster's weighted mean is a difference of prefix sums. :class:`SortedRows` carries that
representation; the upscaling (``upscale.py``) reuses it, and so does the exact two-way split of a cluster
(:func:`best_splits`): every split position of every cluster scored at once from the prefix sums, ``O(in)`` per row.

The solver (:func:`kmeans_bounds`, used by the any-precision seed and by the dedicated k-bit baseline alike):
greedy weighted k-means++ (each new centroid the best of ``2 + log k`` candidates drawn with probability
``f_j * D(w_j)**2``, seeded), Lloyd iterations until no assignment changes, then every empty cluster re-seeded by
the best exact split of a non-empty cluster (largest drop of the weighted error), and Lloyd again. A row with at
least ``2**bits`` distinct values thus uses all ``2**bits`` clusters. The per-row loops are numba
(``kmeans1d.py``). Why not ``flash1dkmeans`` itself (the authors' package, which the official code calls; its
greedy k-means++ + Lloyd is the same algorithm and reaches the same weighted error, a test checks it): it took
12.8 ms per 640-wide row at 256 clusters on this CPU (26 minutes for the dedicated 8-bit Gemma 3 270M baseline,
which must use the same solver), where ours updates the potential only on the run a candidate improves; and its
Lloyd loop keeps an emptied cluster's centroid without re-seeding it.

Weights get a tiny floor (``1e-6`` of the row mean) so entries without gradient signal still count and an
all-zero row falls back to plain k-means; weights equal to a midpoint go to the lower cluster. Prefix sums are
float64 so differences of large sums stay exact enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_FLOOR = 1e-6
ROW_CHUNK_ELEMENTS = 1 << 22
"""Rows are clustered in chunks of about this many weights (the solver's float64 temporaries scale with it)."""


def sensitivity_floor(fisher: torch.Tensor) -> torch.Tensor:
    """Strictly positive per-weight importance: ``fisher`` plus a small fraction of each row's mean (1 if zero)."""
    f = fisher.float().clamp_min(0)
    mean = f.mean(dim=1, keepdim=True)
    return f + _FLOOR * torch.where(mean > 0, mean, torch.ones_like(mean))


@dataclass
class SortedRows:
    """Rows of ``w`` sorted ascending, their sensitivities ``f`` in that order, and prefix sums of ``f * w`` and
    ``f`` (a leading zero column).

    A cluster is a half-open range ``[lo, hi)`` of sorted positions; ``bounds`` tensors of shape ``(out, K + 1)``
    hold ``0 = b_0 <= b_1 <= ... <= b_K = in`` for K clusters.
    """

    w: torch.Tensor
    order: torch.Tensor
    cum_fw: torch.Tensor
    cum_f: torch.Tensor
    f: torch.Tensor

    @classmethod
    def build(cls, w: torch.Tensor, fisher: torch.Tensor) -> SortedRows:
        if w.dim() != 2 or w.shape != fisher.shape:
            raise ValueError(f"weights {tuple(w.shape)} and fisher {tuple(fisher.shape)} must be equal 2-D shapes.")
        f = sensitivity_floor(fisher)
        sw, order = w.float().sort(dim=1, stable=True)
        sf = f.gather(1, order)
        zero = torch.zeros(w.shape[0], 1, dtype=torch.float64, device=w.device)
        return cls(sw.contiguous(), order, torch.cat([zero, (sf.double() * sw.double()).cumsum(1)], 1),
                   torch.cat([zero, sf.double().cumsum(1)], 1), sf)

    def select(self, idx: torch.Tensor) -> SortedRows:
        """The rows ``idx`` only."""
        return SortedRows(self.w[idx], self.order[idx], self.cum_fw[idx], self.cum_f[idx], self.f[idx])

    def count_le(self, values: torch.Tensor) -> torch.Tensor:
        """Per row, how many weights are ``<= values`` (``values`` is ``(out, m)``)."""
        return torch.searchsorted(self.w, values.float().contiguous(), right=True)

    def prefix(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix sums ``(sum f w, sum f)`` of the first ``idx`` sorted weights."""
        return self.cum_fw.gather(1, idx), self.cum_f.gather(1, idx)

    @staticmethod
    def means_between(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor],
                      fallback: torch.Tensor) -> torch.Tensor:
        """Weighted means of the ranges between prefix sums ``a`` and ``b``; empty ranges take ``fallback``."""
        den = b[1] - a[1]
        return torch.where(den > 0, (b[0] - a[0]) / den.clamp_min(1e-300), fallback.double()).float()

    def sorted_codes(self, bounds: torch.Tensor) -> torch.Tensor:
        """Cluster index of every sorted position: int64 ``(out, in)``."""
        out, cols = self.w.shape
        marks = torch.zeros(out, cols + 1, dtype=torch.int64, device=self.w.device)
        marks.scatter_add_(1, bounds[:, 1:-1], torch.ones_like(bounds[:, 1:-1]))
        return marks.cumsum(1)[:, :cols]

    def codes(self, bounds: torch.Tensor) -> torch.Tensor:
        """Cluster index of every weight, in the original column order: int64 ``(out, in)``."""
        sorted_codes = self.sorted_codes(bounds)
        return torch.empty_like(sorted_codes).scatter_(1, self.order, sorted_codes)

    def bounds_of(self, codes: torch.Tensor, n_clusters: int) -> torch.Tensor:
        """Bounds of existing ``codes``; raises if a cluster is not a contiguous range of the sorted row."""
        sorted_codes = codes.long().gather(1, self.order)
        if sorted_codes.shape[1] > 1 and bool((sorted_codes[:, 1:] < sorted_codes[:, :-1]).any()):
            raise ValueError("codes are not monotone in the weights: not a nearest-centroid 1-D clustering.")
        queries = torch.arange(n_clusters + 1, device=codes.device).expand(codes.shape[0], -1).contiguous()
        return torch.searchsorted(sorted_codes.contiguous(), queries)

    def cluster_means(self, bounds: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
        fw, f = self.prefix(bounds)
        return self.means_between((fw[:, :-1], f[:, :-1]), (fw[:, 1:], f[:, 1:]), fallback)


def best_splits(rows: SortedRows, bounds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact weighted two-way split of every cluster: ``(position, error drop)``, both ``(out, K)``.

    A split at sorted position ``j`` of cluster ``[lo, hi)`` makes children ``[lo, j)`` and ``[j, hi)``; the drop of
    ``sum f (w - mean)**2`` is ``L**2 / F_L + R**2 / F_R - T**2 / F_T`` (``L``, ``F_L``: sums of ``f w`` and ``f``
    on the left, from the prefix sums), so every position is scored in one pass and the best one taken: the optimum of
    weighted 2-means on a sorted range, not a Lloyd fixed point. Splits between equal values are not considered.
    A cluster with fewer than two distinct values has drop ``-inf`` and position ``hi`` (nothing moves).
    """
    from .kmeans1d import best_splits as scan  # numba: one in-cache scan per cluster

    return scan(rows.w, rows.cum_fw, rows.cum_f, bounds)


def fill_empty_clusters(rows: SortedRows, bounds: torch.Tensor) -> torch.Tensor:
    """Re-seed empty clusters: a row with ``e`` empty clusters splits, exactly, the ``e`` clusters whose splits lower
    its weighted error most (repeated while that makes progress: a row may have fewer splittable clusters)."""
    bounds = bounds.clone()
    n = rows.w.shape[1]
    active = torch.ones(bounds.shape[0], dtype=torch.bool, device=bounds.device)
    for _ in range(bounds.shape[1]):
        empty = bounds[:, 1:] == bounds[:, :-1]
        idx = (empty.any(1) & active).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        b, n_empty = bounds[idx], empty[idx].sum(1, keepdim=True)
        pos, drop = best_splits(rows.select(idx), b)
        gain, cluster = drop.topk(int(n_empty.max()), dim=1)
        take = (torch.arange(gain.shape[1], device=b.device) < n_empty) & torch.isfinite(gain) & (gain > 0)
        active[idx[~take.any(1)]] = False  # nothing left to split in these rows
        if not bool(take.any()):
            break
        # distinct bounds + the new split positions (each strictly inside a different cluster), sorted; a row
        # short of splittable clusters keeps its remaining empty clusters at the end (bounds equal to n)
        big = n + 1
        kept = torch.where(torch.cat([torch.zeros_like(n_empty, dtype=torch.bool), b[:, 1:] == b[:, :-1]], 1),
                           big, b)
        new = torch.where(take, pos.gather(1, cluster), big)
        merged = torch.cat([kept, new], 1).sort(dim=1).values[:, : b.shape[1]]
        bounds[idx] = merged.clamp_max(n)
    return bounds


def kmeans_bounds(rows: SortedRows, bits: int, iterations: int = 50, seed: int = 0,
                  row_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means on sorted rows: ``(bounds (out, 2**bits + 1), centroids (out, 2**bits))``.

    k-means++ (row ``r`` seeded by ``seed + row_offset + r``), Lloyd, empty clusters re-seeded by exact splits,
    Lloyd, and a last re-seed so that no cluster of a row with enough distinct values ends up empty.
    """
    from .kmeans1d import kmeans_plusplus, lloyd  # numba: compiled on first use (cached on disk)

    centroids = kmeans_plusplus(rows.w, rows.f, 2**bits, seed, row_offset)
    bounds, centroids = lloyd(rows.w, rows.cum_fw, rows.cum_f, centroids, iterations)
    for _ in range(2):
        if not bool((bounds[:, 1:] == bounds[:, :-1]).any()):
            break
        bounds = fill_empty_clusters(rows, bounds)
        bounds, centroids = lloyd(rows.w, rows.cum_fw, rows.cum_f, rows.cluster_means(bounds, centroids),
                                  iterations)
    bounds = fill_empty_clusters(rows, bounds)
    # The table must hold the exact weighted means of the final clusters (the upscaling splits these clusters).
    return bounds, rows.cluster_means(bounds, centroids)


def row_chunks(n_rows: int, n_cols: int) -> list[slice]:
    """Row ranges of about :data:`ROW_CHUNK_ELEMENTS` weights each."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(1, n_cols))
    return [slice(r, min(r + step, n_rows)) for r in range(0, n_rows, step)]


def weighted_kmeans(
    w: torch.Tensor, fisher: torch.Tensor, bits: int, iterations: int = 50, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row weighted 1-D k-means with ``2**bits`` clusters (the solver of :func:`kmeans_bounds`).

    Args:
        w: ``(out, in)`` weights.
        fisher: ``(out, in)`` non-negative sensitivities (squared gradients); a floor is added.
        bits: Code width; ``2**bits`` centroids per row.
        iterations: Maximum Lloyd iterations per round (stops early when no assignment changes).
        seed: Seed of the k-means++ draws.

    Returns:
        ``(codes, centroids)``: ``codes`` int64 ``(out, in)`` in ``[0, 2**bits)``, ``centroids`` float32
        ``(out, 2**bits)``, each the weighted mean of its cluster (a cluster left empty, possible only in a row with
        fewer distinct values than clusters, keeps a value of the row).
    """
    codes, luts = [], []
    for rs in row_chunks(*w.shape):
        rows = SortedRows.build(w[rs], fisher[rs])
        bounds, centroids = kmeans_bounds(rows, bits, iterations, seed, rs.start)
        codes.append(rows.codes(bounds))
        luts.append(centroids)
    return torch.cat(codes), torch.cat(luts)


def weighted_sse(w: torch.Tensor, fisher: torch.Tensor, codes: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``sum f (w - lut[codes])**2`` per row: the objective the seed and every upscaled level minimise."""
    return (fisher.float() * (w.float() - lut.float().gather(1, codes.long())) ** 2).sum(dim=1)
