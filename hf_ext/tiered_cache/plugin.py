"""``TieredCachePlugin``: the tiered cache in an ``accelerate`` training loop.

accelerate has no third-party plugin registry (``Accelerator`` type-checks its plugins), so this plugin is a
dataclass in the style of ``DeepSpeedPlugin`` with its own ``prepare(accelerator, model, optimizer)``.
Under data parallelism (``accelerate launch``) each process tiers its own replica: the model is NOT wrapped in
DDP; the cache averages the gradients over the processes (``all_reduce`` of each gradient divided by the world size,
as DDP does) inside its chunked optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import TieredCacheConfig


@dataclass
class TieredCachePlugin:
    """Tiered caching for an accelerate loop.

    Args:
        config: the cache settings.
        max_grad_norm: clip inside the chunked step (exactly ``clip_grad_norm_``); None = no clipping. Do not call
            ``accelerator.clip_grad_norm_`` on a tiered model: its gradients live in the cache.
    """

    config: TieredCacheConfig = field(default_factory=TieredCacheConfig,
                                      metadata={"help": "The tiered cache settings."})
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm (None: off)."})

    def __post_init__(self) -> None:
        if isinstance(self.config, dict):
            self.config = TieredCacheConfig.from_dict(self.config)
        if not isinstance(self.config, TieredCacheConfig):
            raise ValueError(f"config must be a TieredCacheConfig or a dict, got {type(self.config).__name__}.")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm must be >= 0 or None, got {self.max_grad_norm!r}.")
        self.engine = None

    def prepare(self, accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        """Tier ``model`` and ``optimizer``; returns ``(model, optimizer)`` to train with as usual
        (``accelerator.backward(loss)``, ``optimizer.step()``, ``optimizer.zero_grad()``)."""
        from .attach import TieredEngine

        model = model.to(accelerator.device)
        optimizer = accelerator.prepare_optimizer(optimizer)
        inner = getattr(optimizer, "optimizer", optimizer)
        world = accelerator.num_processes
        self.engine = TieredEngine(self.config, model, inner, max_grad_norm=self.max_grad_norm,
                                   world_size=world, accumulation_steps=accelerator.gradient_accumulation_steps)
        accelerator.register_save_state_pre_hook(self._before_save)
        return model, optimizer

    def _before_save(self, models, weights, output_dir):
        if self.engine is not None:
            self.engine.suspend()

    def close(self) -> None:
        """Give every tensor back as a plain tensor and delete the NVMe files."""
        if self.engine is not None:
            self.engine.detach()
            self.engine = None
