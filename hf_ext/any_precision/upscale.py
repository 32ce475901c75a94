"""Incremental upscaling: from the seed model to every wider code by splitting clusters in two.

At each new bit every cluster ``c`` of a row is split by a weighted 2-means of its members into children ``2c``
(the lower values) and ``2c + 1``. Codes therefore only ever gain a least-significant bit, so the ``k``-bit code of
a weight is exactly the top ``k`` bits of its ``n``-bit code, and each width has its own per-row lookup table.
A cluster is a contiguous range of the sorted row (see :class:`~.seed.SortedRows`), so a split is one position
inside that range. The default split is exact (:func:`~.seed.best_splits`: every position scored from the prefix
sums, ``O(in)`` per row and bit, as the official code's ``flash1dkmeans.kmeans_1d_two_cluster`` aims at);
``method="lloyd"`` keeps the first pass's Lloyd iterations on the threshold ``(c_low + c_high) / 2``, started at
the parent centroid, as the reference the exact split is tested against.

Our choice: a child left empty (a cluster of one distinct value) takes the parent's value, so the lookup of its
members is unchanged.
"""

from __future__ import annotations

import torch

from .seed import SortedRows, best_splits, row_chunks

SPLIT_METHODS = ("exact", "lloyd")


def split_bounds(
    rows: SortedRows, bounds: torch.Tensor, lut: torch.Tensor, iterations: int = 10, method: str = "exact"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every cluster of every row by weighted 2-means (exact, or Lloyd with ``method="lloyd"``).

    Args:
        rows: Sorted rows with prefix sums.
        bounds: ``(out, K + 1)`` cluster bounds at ``b`` bits (``K = 2**b``).
        lut: ``(out, K)`` centroids of those clusters.
        iterations: Maximum Lloyd iterations per split (``method="lloyd"`` only).
        method: ``"exact"`` (the optimal split position) or ``"lloyd"``.

    Returns:
        ``(bounds, lut)`` at ``b + 1`` bits: ``(out, 2K + 1)`` and ``(out, 2K)``, children of cluster ``c`` at
        ``2c`` and ``2c + 1``.
    """
    lo, hi = bounds[:, :-1], bounds[:, 1:]
    fw, f = rows.prefix(bounds)
    p_lo, p_hi = (fw[:, :-1], f[:, :-1]), (fw[:, 1:], f[:, 1:])

    def children(split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p_split = rows.prefix(split)
        return rows.means_between(p_lo, p_split, lut), rows.means_between(p_split, p_hi, lut)

    if method == "exact":
        split = best_splits(rows, bounds)[0]
    elif method == "lloyd":
        split = torch.clamp(rows.count_le(lut), min=lo, max=hi)
        low, high = children(split)
        for _ in range(iterations):
            new = torch.clamp(rows.count_le((low + high) / 2), min=lo, max=hi)
            if torch.equal(new, split):
                break
            split = new
            low, high = children(split)
    else:
        raise ValueError(f"split method must be one of {SPLIT_METHODS}, got {method!r}.")
    low, high = children(split)
    out = bounds.shape[0]
    new_bounds = torch.cat([torch.stack([lo, split], -1).reshape(out, -1), hi[:, -1:]], 1)
    return new_bounds, torch.stack([low, high], -1).reshape(out, -1)


def upscale_bounds(
    rows: SortedRows, bounds: torch.Tensor, lut: torch.Tensor, max_bits: int, iterations: int = 10,
    method: str = "exact",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Split from the seed bounds up to ``max_bits``: ``(bounds at max_bits, {bits: table})``."""
    seed_bits = (lut.shape[1] - 1).bit_length()
    if 2**seed_bits != lut.shape[1]:
        raise ValueError(f"seed table width {lut.shape[1]} is not a power of two.")
    if not seed_bits <= max_bits <= 8:
        raise ValueError(f"max_bits must be in {seed_bits}..8 for a {seed_bits}-bit seed, got {max_bits}.")
    luts = {seed_bits: lut.float()}
    for b in range(seed_bits + 1, max_bits + 1):
        bounds, lut = split_bounds(rows, bounds, lut, iterations, method)
        luts[b] = lut
    return bounds, luts


def upscale(
    w: torch.Tensor,
    fisher: torch.Tensor,
    seed_codes: torch.Tensor,
    seed_lut: torch.Tensor,
    max_bits: int,
    iterations: int = 10,
    method: str = "exact",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Grow a seed model (codes of a 1-D nearest-centroid clustering and its table) to ``max_bits``.

    Returns:
        ``(codes, luts)``: the ``max_bits`` codes as uint8 ``(out, in)`` and ``luts[b]`` float32 ``(out, 2**b)`` for
        every ``b`` from the seed width to ``max_bits``.
    """
    codes, luts = [], []
    for rs in row_chunks(*w.shape):
        rows = SortedRows.build(w[rs], fisher[rs])
        bounds, chunk_luts = upscale_bounds(rows, rows.bounds_of(seed_codes[rs], seed_lut.shape[1]), seed_lut[rs],
                                            max_bits, iterations, method)
        codes.append(rows.codes(bounds).to(torch.uint8))
        luts.append(chunk_luts)
    return torch.cat(codes), {b: torch.cat([lut[b] for lut in luts]) for b in luts[0]}


def prefix_codes(codes: torch.Tensor, max_bits: int, bits: int) -> torch.Tensor:
    """The ``bits``-bit code of each weight: the top ``bits`` of its ``max_bits``-bit code."""
    return codes.long() >> (max_bits - bits)
