"""Profiler: the execution order of every managed tensor in one optimizer step (parameters in forward through module
hooks, in backward where autograd unpacks them, gradients as they are produced, optimizer states in the step), their
sizes, per-op compute time and the tensor-size histogram."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .planner import Op, size_histogram


@dataclass
class Profile:
    """What the profiling step recorded."""

    ops: list[Op] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def histogram(self) -> dict[int, int]:
        return size_histogram(self.sizes)

    def module_seconds(self) -> dict[str, float]:
        """Compute time per op name (summed over repeats)."""
        out: dict[str, float] = {}
        for op in self.ops:
            out[op.name] = out.get(op.name, 0.0) + op.seconds
        return out

    def forward_order(self) -> list[str]:
        return [op.name[len("fwd:"):] for op in self.ops if op.name.startswith("fwd:")]


class TraceRecorder:
    """Records ops as the engine enters them; an op's compute time is the wall time until the next op starts,
    minus the time the engine spent waiting for data inside it (stall)."""

    def __init__(self) -> None:
        self.profile = Profile()
        self._open: tuple[str, tuple[str, ...], float, float] | None = None

    def enter(self, name: str, keys: tuple[str, ...], stall_so_far: float) -> None:
        now = time.perf_counter()
        self._close(now, stall_so_far)
        self._open = (name, keys, now, stall_so_far)

    def update_keys(self, keys: tuple[str, ...]) -> None:
        if self._open is not None:
            self._open = (self._open[0], keys, self._open[2], self._open[3])

    def finish(self, stall_so_far: float) -> Profile:
        self._close(time.perf_counter(), stall_so_far)
        return self.profile

    def _close(self, now: float, stall: float) -> None:
        if self._open is None:
            return
        name, keys, start, stall0 = self._open
        self.profile.ops.append(Op(name, keys, max(0.0, now - start - (stall - stall0))))
        self._open = None


def module_order(model: torch.nn.Module, *args, **kwargs) -> list[str]:
    """Names of the modules owning parameters, in the order their forward runs (plain hooks, no cache): the
    reference order a profile must match."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, a, n=name: order.append(n))
               for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    try:
        model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return order
