"""Attaching the cache to a model and its optimizer: adoption of the tensors, module / autograd / gradient hooks, the
chunked optimizer step, and giving everything back (:meth:`TieredEngine.detach`)."""

from __future__ import annotations

import atexit
import time

import torch
from transformers.utils import logging

from .chunked_step import ChunkedStepMixin
from .config import TieredCacheConfig
from .engine import Block, CacheCore
from .planner import HOST, NVME, device_slots, host_slots, place, size_histogram
from .pools import ALIGN, SlotPool, padded
from .storage import NvmeStore, TieredCacheError, check_nvme_path

logger = logging.get_logger(__name__)

_SAVED = "hf_ext_tiered_saved"
_STATES_PER_PARAM = {"Adam": 2, "AdamW": 2, "SGD": 1, "RMSprop": 1, "Adagrad": 1}


class TieredEngine(ChunkedStepMixin, CacheCore):
    """Tiered caching of a model's parameters, gradients and optimizer states.

    Args:
        config: the settings.
        model: the model (all parameters on one device).
        optimizer: the torch optimizer over ``model``'s parameters (its ``step`` is wrapped), or None.
        max_grad_norm: clip gradients to this norm inside the step (computed from per-tensor norms kept as the
            gradients arrive, exactly as ``torch.nn.utils.clip_grad_norm_``); None or 0 = no clipping.
        world_size: data-parallel processes; above 1 each gradient is divided by it and all-reduced (summed) in
            the step, as DDP does, so the replicas stay equal.
        accumulation_steps: backward passes per optimizer step (gradient accumulation). With
            ``config.update_in_backward`` the last one updates each parameter as its gradient completes; None =
            the count seen in the profiled step (the Trainer callback passes its ``gradient_accumulation_steps``).
            A step with fewer backward passes (an epoch's end) is updated in ``optimizer.step`` as usual.
    """

    def __init__(self, config: TieredCacheConfig, model: torch.nn.Module, optimizer=None,
                 max_grad_norm: float | None = None, world_size: int = 1, accumulation_steps: int | None = None):
        if accumulation_steps is not None and accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be >= 1 or None, got {accumulation_steps!r}.")
        params = list(model.parameters())
        if not params:
            raise ValueError("The model has no parameters to tier.")
        devices = {p.device for p in params}
        if len(devices) != 1:
            raise ValueError(f"All parameters must be on one device to tier them, found {sorted(map(str, devices))}.")
        super().__init__(config, devices.pop())
        self.model, self.optimizer, self.max_grad_norm = model, optimizer, max_grad_norm
        self.world_size = world_size
        self.accumulation_steps = accumulation_steps
        self._micro = self._micro_seen = 0  # backward passes since the last optimizer step
        self._fwd_pending = False  # a forward with autograd ran and its backward has not started
        self.params = params
        self.pkey = {}
        for name, p in model.named_parameters():
            self.pkey.setdefault(id(p), name)
        self.n_states = _STATES_PER_PARAM.get(type(optimizer).__name__, 2) if optimizer is not None else 0
        self.state_keys: dict[str, tuple[str, ...]] = {}
        self._bwd_pins: list[str] = []
        self._handles: list = []
        self._orig_step = None
        self._t_mark = time.perf_counter()
        self.last_grad_norm: float | None = None
        self.training_state_bytes = 0
        self.suspended = False
        self._setup()
        atexit.register(self.close)  # NVMe files go even when the caller never detaches
        try:
            self._adopt_params()
            self._install_hooks()
            if optimizer is not None:
                self._wrap_optimizer(optimizer)
        except BaseException:
            self.detach()
            raise

    # ------------------------------------------------------------------------------------------------ setup
    def _planned_blocks(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for p in self.params:
            k, n = self.pkey[id(p)], p.numel() * p.element_size()
            sizes[k] = n
            if p.requires_grad:
                sizes["grad:" + k] = n
                for i in range(self.n_states):
                    sizes[f"s{i}:{k}"] = n
        return sizes

    def _setup(self) -> None:
        cfg = self.config
        self.sizes = sizes = self._planned_blocks()
        self.training_state_bytes = sum(sizes.values())
        hist = size_histogram(sizes)
        budget = cfg.device_budget
        if budget is None:
            budget = (torch.cuda.mem_get_info(self.device)[0] if self.cuda else self.training_state_bytes // 4)
        dev_slots = device_slots(hist, budget, cfg.device_pool_divisor, cfg.min_device_slots)
        params = [k for k in sizes if ":" not in k]
        grads = [k for k in sizes if k.startswith("grad:")]
        order = params + grads[::-1] + [k for k in sizes if k.startswith("s")]
        unbounded = cfg.host_budget is None and cfg.nvme_path is None
        host_budget = cfg.host_budget if cfg.host_budget is not None else 0
        hslots = {} if unbounded else host_slots(hist, {}, host_budget, cfg.host_pool_divisor, cfg.host_extra_slots)
        # blocks that will mostly sit on the device take the NVMe homes; pinned host slots go to the others
        self.homes = place(order[::-1], sizes, {}, hslots, cfg.nvme_path is not None, unbounded)
        nvme_bytes = sum(padded(sizes[k]) + ALIGN for k, h in self.homes.items() if h == NVME)
        if nvme_bytes:
            check_nvme_path(cfg.nvme_path, nvme_bytes)
            self.nvme = NvmeStore(cfg.nvme_path, cfg.direct_io, cfg.checksum)
            self.stats.io_mode = self.nvme.io_mode
        self.dev = SlotPool(dev_slots, self.device, name="device")
        host_counts: dict[int, int] = {}
        for k, h in self.homes.items():
            if h == HOST:
                host_counts[sizes[k]] = host_counts.get(sizes[k], 0) + 1
        self.host = SlotPool(host_counts, "cpu", pin=self.cuda, name="host")
        self.allocations = self.dev.allocations + self.host.allocations
        self.resident = {s: set() for s in dev_slots}
        self.nvme_bytes = nvme_bytes

    def _home_slot(self, b: Block) -> None:
        if b.home == HOST and b.host_slot is None:
            b.host_slot = self.host.acquire(b.nbytes)

    def _new_block(self, key: str, t: torch.Tensor | None, kind: str, shape, dtype) -> Block:
        b = Block(key, self.sizes[key], dtype, torch.Size(shape), kind, home=self.homes[key], tensor=t)
        self._home_slot(b)
        self.blocks[key] = b
        return b

    def _adopt(self, b: Block, src: torch.Tensor, protect: set[str]) -> None:
        """Move ``src``'s values into ``b``: a free device slot when there is one, else its home."""
        slot = self.dev.acquire(b.nbytes) if not protect else self._acquire(b, protect)
        if slot is not None:
            self.wait_slot(slot)
        if slot is not None and b.dev_slot is None:
            b.dev_slot = slot
            self.resident[b.nbytes].add(b.key)
            self.slot_owner[slot] = b.key
        if b.dev_slot is not None:
            self.view(b).copy_(src)
            b.on_home = False
            b.tensor.data = self.view(b)
            return
        if b.home == HOST:
            self.host.view(b.host_slot, b.dtype, b.shape).copy_(src)
        else:
            tmp = SlotPool({b.nbytes: 1}, "cpu")
            tmp.view(0, b.dtype, b.shape).copy_(src)
            self.nvme.write(b.key, tmp.raw(0), b.nbytes)
        b.on_home = True
        b.tensor.data = self.placeholder(b.dtype, b.shape)

    def _adopt_params(self) -> None:
        for p in self.params:
            k = self.pkey[id(p)]
            with torch.no_grad():
                self._adopt(self._new_block(k, p, "param", p.shape, p.dtype), p.data, set())
            if p.requires_grad:
                g = self._new_block("grad:" + k, None, "grad", p.shape, p.dtype)
                g.live = False

    # ------------------------------------------------------------------------------------------------ hooks
    def _install_hooks(self) -> None:
        self._saved_ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre, prepend=True))
        self._handles.append(self.model.register_forward_hook(self._root_post, always_call=True))
        for name, m in self.model.named_modules():
            keys = tuple(dict.fromkeys(self.pkey[id(p)] for p in m.parameters(recurse=False)))
            if keys:
                self._handles.append(m.register_forward_pre_hook(
                    lambda mod, args, n=name, ks=keys: self.enter_op("fwd:" + n, ks)))
                self._handles.append(m.register_forward_hook(
                    lambda mod, args, out, ks=keys: self.exit_op(ks), always_call=True))
        for p in self.params:
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_ready))

    def _root_pre(self, mod, args) -> None:
        self._release_bwd_pins()
        self._fwd_pending = torch.is_grad_enabled() and not self.suspended
        self._saved_ctx.__enter__()

    def _root_post(self, mod, args, out) -> None:
        self._saved_ctx.__exit__(None, None, None)

    def _pack(self, t: torch.Tensor):
        ptr = t.data_ptr()
        if t.device != self.device or not self.dev.contains(ptr):
            return t
        key = self.slot_owner.get(self.dev.find(ptr))
        if key is None or self.blocks[key].kind != "param":
            return t
        base = self.view(self.blocks[key])
        return (_SAVED, key, t.storage_offset() - base.storage_offset(), tuple(t.shape), tuple(t.stride()))

    def _unpack(self, x):
        if not (isinstance(x, tuple) and len(x) == 5 and x[0] == _SAVED):
            return x
        _, key, rel, shape, stride = x
        self.enter_op("bwd:" + key, (key,))
        self._bwd_pins.append(key)  # released when its gradient arrives (the node using it has finished)
        base = self.view(self.blocks[key])
        return base.as_strided(shape, stride, base.storage_offset() + rel)

    def _unpin_bwd(self, key: str) -> None:
        while key in self._bwd_pins:
            self._bwd_pins.remove(key)
            self.blocks[key].pins -= 1

    def _release_bwd_pins(self) -> None:
        for k in self._bwd_pins:
            self.blocks[k].pins -= 1
        self._bwd_pins.clear()

    def enter_op(self, name: str, keys: tuple[str, ...]) -> None:
        if self.suspended:  # plain tensors in place (a checkpoint save or an evaluation): leave them alone
            return
        now = time.perf_counter()
        self.timeline.add("compute", self._t_mark, now, name)
        self.reap()
        pos = self.locate(name)
        if pos is not None:
            self.now = pos
        if self.recorder is not None:
            self.recorder.enter(name, keys, self.stats.stall_seconds)
        protect = set(keys)
        for k in keys:
            self.ensure(k, protect)
            self.blocks[k].pins += 1
        if pos is not None and self.config.prefetch:
            self.prefetch(pos)
        self._t_mark = time.perf_counter()

    def exit_op(self, keys: tuple[str, ...]) -> None:
        if self.suspended:
            return
        for k in keys:
            self.blocks[k].pins -= 1

    def _grad_ready(self, p: torch.Tensor) -> None:
        if self._fwd_pending:  # the first gradient of a backward: count the pass (a forward alone does not)
            self._micro += 1
            self._fwd_pending = False
        k = self.pkey[id(p)]
        self._unpin_bwd(k)
        g = self.blocks["grad:" + k]
        accumulate = g.live
        self.enter_op("grad:" + k, (g.key,))
        with torch.no_grad():
            v = self.view(g)
            v.add_(p.grad) if accumulate else v.copy_(p.grad)
            if self.max_grad_norm:
                g.norm = torch.linalg.vector_norm(v, 2.0)
        g.on_home = False
        p.grad = None
        self.exit_op((g.key,))
        if self.optimizer is not None and self._fusing():
            self._update(p)  # autograd is done with p: every node that used it fed this gradient

    # ------------------------------------------------------------------------------------------------ stats / end
    def summary(self):
        self.stats.device_pool_utilization = self.dev.utilization
        self.stats.host_pool_utilization = self.host.utilization if self.host.capacity else 0.0
        self.stats.allocations = self.allocations + self.dev.allocations + self.host.allocations - 2
        return self.stats

    def _free_memory(self) -> int | None:
        """Bytes free where tensors are given back (the device, or RAM from /proc/meminfo); None if unknown."""
        if self.cuda:
            return torch.cuda.mem_get_info(self.device)[0]
        try:
            with open("/proc/meminfo") as f:
                return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemAvailable:"))
        except (OSError, StopIteration):
            return None

    def materialize(self, states: bool = True) -> None:
        """Give every parameter and optimizer state back as an ordinary tensor with its latest values (after a
        failure too: a value whose write-back failed is still in its device slot). ``states=False`` gives the
        parameters back and drops the optimizer states (a model whose training state exceeds memory: the point
        of the NVMe tier)."""
        if not states and self.optimizer is not None:
            self.optimizer.state.clear()
        failed = dict(self.failed_writes)
        for slot, (k, fut) in list(self._slot_writes.items()):
            if fut.exception() is not None:
                failed[k] = slot
        self._slot_writes.clear()
        for b in self.blocks.values():
            if b.pending is not None and b.pending.exception() is not None:
                b.dev_slot = None  # its load never happened
            b.pending = None
        for b in self.blocks.values():
            if b.tensor is None or b.kind == "grad" or (b.kind == "state" and not states):
                continue
            out = torch.empty(b.shape, dtype=b.dtype, device=self.device)
            if b.dev_slot is not None:
                out.copy_(self.view(b))
            elif b.key in failed:
                out.copy_(self.dev.view(failed[b.key], b.dtype, b.shape))
            elif b.home == HOST:
                out.copy_(self.host.view(b.host_slot, b.dtype, b.shape))
            else:
                tmp = SlotPool({b.nbytes: 1}, "cpu")
                try:
                    self.nvme.read(b.key, tmp.raw(0), b.nbytes)
                except TieredCacheError:
                    if not b.on_home and b.kind == "param":
                        raise
                out.copy_(tmp.view(0, b.dtype, b.shape))
            b.tensor.data = out

    def suspend(self) -> None:
        """Plain tensors with the latest values (for a checkpoint save or an evaluation by other code); the cache
        keeps its copies, and :meth:`resume` points the tensors back at them. Memory: the whole model for a while."""
        for b in self.blocks.values():
            self._wait(b)
        while self._slot_writes:
            slot = next(iter(self._slot_writes))
            self.wait_slot(slot)
            self.reap()
        self.materialize()
        self.suspended = True

    def resume(self) -> None:
        for b in self.blocks.values():
            if b.tensor is not None and b.kind != "grad":
                b.tensor.data = self.view(b) if b.dev_slot is not None else self.placeholder(b.dtype, b.shape)
        self.suspended = False

    def __enter__(self) -> TieredEngine:
        return self

    def __exit__(self, *exc) -> bool:
        self.detach()
        return False

    def detach(self) -> None:
        """Restore plain tensors, remove every hook, unwrap the optimizer, delete the NVMe files."""
        if self.closed:
            return
        try:
            if self.blocks:
                need = sum(b.nbytes for b in self.blocks.values() if b.tensor is not None and b.kind != "grad")
                free = self._free_memory()
                keep = free is None or need <= 0.9 * free  # (the pools are still allocated while we copy out)
                if not keep:
                    logger.warning("Giving back parameters only: parameters + optimizer states (%.2f GiB) exceed "
                                   "the free memory (%.2f GiB); the optimizer states are dropped with the NVMe "
                                   "files.", need / 2**30, free / 2**30)
                self.materialize(states=keep)
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            if self._orig_step is not None:
                self.optimizer.step = self._orig_step
            self.close()
            atexit.unregister(self.close)
