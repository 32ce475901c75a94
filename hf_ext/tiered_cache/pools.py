"""Buffer pools: ONE contiguous allocation per pool (pinned on the host when CUDA is present), cut into slots per
size class and reused through free lists, so the steady state allocates nothing.

Slots start on 4 KiB boundaries and are padded to 4 KiB, so a slot can be read from and written to a file opened
with O_DIRECT in place (no bounce buffer).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import torch

ALIGN = 4096


def padded(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class SlotPool:
    """Fixed slots of each size class inside one buffer.

    Args:
        slots: size class (bytes) -> number of slots.
        device: where the buffer lives.
        pin: page-lock the host buffer (for asynchronous copies to a CUDA device).
        name: for messages and metrics.
    """

    def __init__(self, slots: Mapping[int, int], device: torch.device | str = "cpu", pin: bool = False,
                 name: str = "pool"):
        self.name = name
        self.slots = {int(s): int(n) for s, n in slots.items() if n > 0}
        self.capacity = sum(padded(s) * n for s, n in self.slots.items())
        self.allocations = 0
        self.buffer = torch.empty(self.capacity + ALIGN, dtype=torch.uint8, device=device,
                                  pin_memory=pin and torch.device(device).type == "cpu")
        self.allocations += 1
        base = self.buffer.data_ptr()
        start = (-base) % ALIGN
        self.offsets: list[int] = []
        self.slot_size: list[int] = []
        self.free: dict[int, list[int]] = {}
        off = start
        for s, n in sorted(self.slots.items()):
            for _ in range(n):
                self.free.setdefault(s, []).append(len(self.offsets))
                self.offsets.append(off)
                self.slot_size.append(s)
                off += padded(s)
        for lst in self.free.values():
            lst.reverse()  # pop() hands out the lowest address first
        self._ptrs = [base + o for o in self.offsets]
        self.in_use = 0
        self.peak_in_use = 0

    def acquire(self, nbytes: int) -> int | None:
        """A free slot of class ``nbytes``, or None when every slot of that class is taken."""
        lst = self.free.get(nbytes)
        if not lst:
            return None
        self.in_use += nbytes
        self.peak_in_use = max(self.peak_in_use, self.in_use)
        return lst.pop()

    def release(self, slot: int) -> None:
        s = self.slot_size[slot]
        self.free[s].append(slot)
        self.in_use -= s

    def raw(self, slot: int) -> torch.Tensor:
        """The slot's bytes, padded to 4 KiB (a view; no allocation of memory)."""
        o = self.offsets[slot]
        return self.buffer[o:o + padded(self.slot_size[slot])]

    def view(self, slot: int, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
        o = self.offsets[slot]
        return self.buffer[o:o + self.slot_size[slot]].view(dtype).view(shape)

    def find(self, ptr: int) -> int | None:
        """The slot holding address ``ptr``, if any."""
        j = bisect.bisect_right(self._ptrs, ptr) - 1
        if j >= 0 and ptr < self._ptrs[j] + self.slot_size[j]:
            return j
        return None

    def contains(self, ptr: int) -> bool:
        return bool(self._ptrs) and self._ptrs[0] <= ptr < self._ptrs[-1] + self.slot_size[-1]

    @property
    def utilization(self) -> float:
        """Peak bytes in use over the pool's capacity."""
        return self.peak_in_use / self.capacity if self.capacity else 0.0
