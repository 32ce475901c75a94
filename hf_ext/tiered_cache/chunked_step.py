"""The optimizer step chunk by chunk where the states live: for each parameter, its value, gradient and optimizer
states are brought to the device together and the user's own optimizer ``step`` runs on that one tensor (every other
gradient is None, so it is skipped), which keeps any elementwise optimizer bit-for-bit unchanged. Clipping and the
data-parallel gradient average happen here too."""

from __future__ import annotations

import torch

from .engine import Block


class ChunkedStepMixin:
    """Optimizer glue of :class:`~hf_ext.tiered_cache.attach.TieredEngine` (needs its blocks and ops)."""

    def _wrap_optimizer(self, opt) -> None:
        managed = {id(p) for p in self.params}
        for group in opt.param_groups:
            for p in group["params"]:
                if id(p) not in managed:
                    raise ValueError("The optimizer holds a parameter that is not in the model; the tiered cache "
                                     "steps parameters chunk by chunk and needs every one of them managed.")
        self._orig_step = opt.step
        opt.step = self._step

    def _clip_coef(self) -> torch.Tensor | None:
        if not self.max_grad_norm or self.max_grad_norm <= 0:
            return None
        norms = [self.blocks["grad:" + self.pkey[id(p)]].norm for p in self.params
                 if p.requires_grad and self.blocks["grad:" + self.pkey[id(p)]].live]
        if not norms:
            return None
        total = torch.linalg.vector_norm(torch.stack(norms), 2.0)
        self.last_grad_norm = float(total)
        return torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)

    @torch.no_grad()
    def _step(self, closure=None):
        if closure is not None:
            raise ValueError("The tiered cache's chunked optimizer step does not take a closure.")
        self._release_bwd_pins()
        if self.world_size > 1:
            self._all_reduce()
        coef = self._clip_coef()
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                self._update(p, coef)  # those updated in the backward (update_in_backward) have no live gradient
        self._end_step()

    def _fusing(self) -> bool:
        """Whether this backward updates each parameter as its gradient completes (the last micro-batch of a
        planned step, no clipping, one process)."""
        return (self.fuse and self.trace is not None and self._micro >= (self.accumulation_steps or 1))

    @torch.no_grad()
    def _update(self, p, coef: torch.Tensor | None = None) -> None:
        """The user's optimizer step on ``p`` alone, with its value, gradient and states resident together."""
        k = self.pkey[id(p)]
        g = self.blocks.get("grad:" + k)
        if g is None or not g.live:
            return
        states = self.state_keys.get(k, ())
        keys = (k, g.key, *states)
        self.enter_op("step:" + k, keys)
        p.grad = self.view(g)
        if coef is not None:
            p.grad.mul_(coef)
        self._orig_step()
        p.grad = None
        if not states:
            states = self._adopt_states(p, k, set(keys))
            keys = (k, g.key, *states)
            if self.recorder is not None:
                self.recorder.update_keys(keys)
        for s in (k, *states):
            self.blocks[s].on_home = False
        self.exit_op(keys)
        self._drop(g)

    def _all_reduce(self) -> None:
        import torch.distributed as dist

        for p in self.params:
            g = self.blocks.get("grad:" + self.pkey[id(p)])
            if g is None or not g.live:
                continue
            self.enter_op("reduce:" + g.key, (g.key,))
            v = self.view(g)
            v.div_(self.world_size)
            dist.all_reduce(v)
            g.on_home = False  # changed in place: an eviction must write it back
            if self.max_grad_norm:
                g.norm = torch.linalg.vector_norm(v, 2.0)
            self.exit_op((g.key,))

    def _adopt_states(self, p, k: str, protect: set[str]) -> tuple[str, ...]:
        tensors = [t for n, t in self.optimizer.state[p].items()
                   if n != "step" and torch.is_tensor(t) and t.shape == p.shape]
        if len(tensors) > self.n_states:
            raise ValueError(f"{type(self.optimizer).__name__} keeps {len(tensors)} states per parameter, the "
                             f"tiered cache planned {self.n_states}.")
        keys = []
        for i, t in enumerate(tensors):
            b = self._new_block(f"s{i}:{k}", t, "state", t.shape, t.dtype)
            self._adopt(b, t.data, protect | {b.key})
            b.pins += 1  # like the op's other tensors; exit_op unpins it
            keys.append(b.key)
        self.state_keys[k] = tuple(keys)
        return self.state_keys[k]

    def _drop(self, g: Block) -> None:
        if g.dev_slot is not None:
            if self.cuda:  # a later load into this slot waits for the step's kernels on it
                ev = torch.cuda.Event()
                ev.record()
                self._slot_free_events[g.dev_slot] = ev
            self.resident[g.nbytes].discard(g.key)
            self.slot_owner.pop(g.dev_slot, None)
            self.dev.release(g.dev_slot)
            g.dev_slot = None
        g.live, g.on_home, g.norm = False, False, None

    def _end_step(self) -> None:
        self.stats.steps += 1
        self.cursor = 0
        self.fetch_next = 0
        self._micro_seen, self._micro = self._micro, 0
        if self.timeline.active:
            self.timeline.active = False
            if self.config.timeline_path:
                self.timeline.save_png(self.config.timeline_path)
        if self.recorder is not None and self.stats.steps >= self.config.profile_steps:
            if self.accumulation_steps is None:  # learned: backward passes in the profiled step
                self.accumulation_steps = max(self._micro_seen, 1)
            self.fuse = bool(self.config.update_in_backward and not self.max_grad_norm and self.world_size == 1)
            self.plan()
            io_mode = self.stats.io_mode
            self.stats = type(self.stats)(io_mode=io_mode)
            self.timeline.start()
