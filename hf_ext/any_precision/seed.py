"""Seed model: per-row weighted 1-D k-means (SqueezeLLM-style sensitivity-weighted non-uniform quantization).

Each output row of a weight matrix gets its own ``2**bits`` centroids minimising ``sum_j f_j (w_j - c(w_j))**2``,
where ``f`` is the diagonal Fisher information (squared gradients of the calibration loss). All rows are solved at
once, and in one dimension cheaply: each row is sorted once, a cluster is then a contiguous range of the sorted row,
nearest-centroid assignment is a ``searchsorted`` of the centroid midpoints (``2**bits`` queries per row, not one per
weight) and a cluster's weighted mean is a difference of prefix sums. An iteration thus costs ``O(out * 2**bits *
log in)`` instead of ``O(out * in)``; :class:`SortedRows` carries that representation and the upscaling reuses it.

Our choices (the paper defers to SqueezeLLM / scikit-learn): centroids start at weighted quantiles of the row, a
centroid whose cluster empties keeps its value, weights equal to a midpoint go to the lower cluster, and weights get
a tiny floor (``1e-6`` of the row mean) so entries without gradient signal still count and an all-zero row falls
back to plain k-means. Prefix sums are float64 so differences of large sums stay exact enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_FLOOR = 1e-6


def sensitivity_floor(fisher: torch.Tensor) -> torch.Tensor:
    """Strictly positive per-weight importance: ``fisher`` plus a small fraction of each row's mean (1 if zero)."""
    f = fisher.float().clamp_min(0)
    mean = f.mean(dim=1, keepdim=True)
    return f + _FLOOR * torch.where(mean > 0, mean, torch.ones_like(mean))


@dataclass
class SortedRows:
    """Rows of ``w`` sorted ascending, with prefix sums of ``f * w`` and ``f`` (a leading zero column).

    A cluster is a half-open range ``[lo, hi)`` of sorted positions; ``bounds`` tensors of shape ``(out, K + 1)``
    hold ``0 = b_0 <= b_1 <= ... <= b_K = in`` for K clusters.
    """

    w: torch.Tensor
    order: torch.Tensor
    cum_fw: torch.Tensor
    cum_f: torch.Tensor

    @classmethod
    def build(cls, w: torch.Tensor, fisher: torch.Tensor) -> SortedRows:
        if w.dim() != 2 or w.shape != fisher.shape:
            raise ValueError(f"weights {tuple(w.shape)} and fisher {tuple(fisher.shape)} must be equal 2-D shapes.")
        f = sensitivity_floor(fisher)
        sw, order = w.float().sort(dim=1, stable=True)
        sf = f.gather(1, order).double()
        zero = torch.zeros(w.shape[0], 1, dtype=torch.float64, device=w.device)
        return cls(sw.contiguous(), order, torch.cat([zero, (sf * sw.double()).cumsum(1)], 1),
                   torch.cat([zero, sf.cumsum(1)], 1))

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

    def codes(self, bounds: torch.Tensor) -> torch.Tensor:
        """Cluster index of every weight, in the original column order: int64 ``(out, in)``."""
        out, cols = self.w.shape
        marks = torch.zeros(out, cols + 1, dtype=torch.int64, device=self.w.device)
        marks.scatter_add_(1, bounds[:, 1:-1], torch.ones_like(bounds[:, 1:-1]))
        sorted_codes = marks.cumsum(1)[:, :cols]
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


def weighted_quantile_init(rows: SortedRows, n_clusters: int) -> torch.Tensor:
    """Initial centroids ``(out, n_clusters)``: the row's values at weighted quantiles ``(i + 0.5) / n_clusters``."""
    total = rows.cum_f[:, -1:]
    targets = (torch.arange(n_clusters, device=total.device, dtype=total.dtype) + 0.5) / n_clusters * total
    pos = torch.searchsorted(rows.cum_f[:, 1:].contiguous(), targets.contiguous())
    return rows.w.gather(1, pos.clamp_max(rows.w.shape[1] - 1))


def _bounds_from_centroids(rows: SortedRows, centroids: torch.Tensor) -> torch.Tensor:
    out, cols = rows.w.shape
    inner = rows.count_le((centroids[:, 1:] + centroids[:, :-1]) / 2)
    first = torch.zeros(out, 1, dtype=torch.int64, device=inner.device)
    return torch.cat([first, inner, torch.full_like(first, cols)], 1)


def kmeans_bounds(rows: SortedRows, bits: int, iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted k-means on sorted rows: ``(bounds (out, 2**bits + 1), centroids (out, 2**bits))``."""
    k = 2**bits
    centroids = weighted_quantile_init(rows, k)
    bounds = _bounds_from_centroids(rows, centroids)
    for _ in range(iterations):
        centroids = rows.cluster_means(bounds, centroids).sort(dim=1).values
        new = _bounds_from_centroids(rows, centroids)
        if torch.equal(new, bounds):
            break
        bounds = new
    # The table must hold the exact weighted means of the final clusters (the upscaling splits these clusters).
    return bounds, rows.cluster_means(bounds, centroids)


def weighted_kmeans(
    w: torch.Tensor, fisher: torch.Tensor, bits: int, iterations: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row weighted 1-D k-means with ``2**bits`` clusters.

    Args:
        w: ``(out, in)`` weights.
        fisher: ``(out, in)`` non-negative sensitivities (squared gradients); a floor is added.
        bits: Code width; ``2**bits`` centroids per row.
        iterations: Maximum Lloyd iterations (stops early when no assignment changes).

    Returns:
        ``(codes, centroids)``: ``codes`` int64 ``(out, in)`` in ``[0, 2**bits)``, ``centroids`` float32
        ``(out, 2**bits)``, each the weighted mean of its cluster (or its last value if the cluster is empty).
    """
    rows = SortedRows.build(w, fisher)
    bounds, centroids = kmeans_bounds(rows, bits, iterations)
    return rows.codes(bounds), centroids


def weighted_sse(w: torch.Tensor, fisher: torch.Tensor, codes: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``sum f (w - lut[codes])**2`` per row: the objective the seed and every upscaled level minimise."""
    return (fisher.float() * (w.float() - lut.float().gather(1, codes.long())) ** 2).sum(dim=1)
