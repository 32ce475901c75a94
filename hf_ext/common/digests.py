"""Digests of tensors' bytes, so a reloaded checkpoint can prove it holds what was saved.

``tensor_digest`` hashes the raw bytes (blake2b, 8 bytes, hex) of a contiguous CPU copy: the same values in the same
dtype and shape give the same digest on any device; a flipped bit gives another one.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

_POPCOUNT = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def tensor_digest(t: torch.Tensor) -> str:
    """Hex blake2b digest (8 bytes) of ``t``'s raw bytes."""
    data = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
    return hashlib.blake2b(data.data, digest_size=8).hexdigest()


def buffer_digests(module: nn.Module, persistent_only: bool = True) -> dict[str, str]:
    """``{buffer name: digest}`` of a module's own buffers (by default only those its state dict saves)."""
    skip = module._non_persistent_buffers_set if persistent_only else set()
    return {name: tensor_digest(buf) for name, buf in module.named_buffers(recurse=False)
            if name not in skip and buf is not None}


def popcount(packed: torch.Tensor) -> int:
    """Number of set bits in a ``uint8`` tensor (e.g. the kept weights of a packed bitmask)."""
    return int(_POPCOUNT.to(packed.device)[packed.reshape(-1).long()].sum())
