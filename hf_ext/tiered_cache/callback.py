"""``TieredCacheCallback``: the tiered cache inside ``transformers.Trainer``."""

from __future__ import annotations

from transformers import TrainerCallback
from transformers.utils import logging

from .config import TieredCacheConfig

logger = logging.get_logger(__name__)


class TieredCacheCallback(TrainerCallback):
    """Tier the model's parameters, gradients and optimizer states while a ``Trainer`` trains.

    Set up lazily in ``on_train_begin`` (the optimizer exists then); metrics join the logs in ``on_log`` (a copy of
    the Trainer's ``logs``, kept in :attr:`log_history` and logged); checkpoints save plain tensors (the cache is
    suspended around the save); ``on_train_end`` gives every tensor back and deletes the NVMe files. Use it as a
    context manager (``with TieredCacheCallback(cfg) as cb: trainer.train()``) so the files also go after an
    exception; otherwise they go at interpreter exit.

    Gradient clipping (``args.max_grad_norm``) happens inside the cache's chunked optimizer step, identically to
    ``clip_grad_norm_``; the Trainer's own ``grad_norm`` log then reads 0 (the gradients are in the cache): the true
    norm is logged as ``tiered/grad_norm``. One process per device; under data parallelism use
    :class:`~hf_ext.tiered_cache.plugin.TieredCachePlugin`.

    Args:
        config: the cache settings (default: :class:`TieredCacheConfig` defaults).
    """

    def __init__(self, config: TieredCacheConfig | None = None):
        self.config = config or TieredCacheConfig()
        self.engine = None
        self.log_history: list[dict] = []
        self._ready = False

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self._ready:
            return
        if args.world_size > 1:
            raise ValueError("TieredCacheCallback runs in one process; for data parallelism use "
                             "hf_ext.TieredCachePlugin(config).prepare(accelerator, model, optimizer).")
        if model is None or optimizer is None:
            raise ValueError("TieredCacheCallback needs the Trainer's model and optimizer in on_train_begin.")
        from .attach import TieredEngine

        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
        self.engine = TieredEngine(self.config, model, inner, max_grad_norm=args.max_grad_norm,
                                   accumulation_steps=args.gradient_accumulation_steps)
        self._ready = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.engine is not None and (control.should_save or control.should_evaluate):
            self.engine.suspend()  # save / evaluate plain tensors; resumed at the next step

    def on_step_begin(self, args, state, control, **kwargs):
        if self.engine is not None and self.engine.suspended:
            self.engine.resume()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.engine is None or not state.is_world_process_zero:
            return
        logs = dict(logs or {})
        logs.update(self.engine.summary().to_logs())
        if self.engine.last_grad_norm is not None:
            logs["tiered/grad_norm"] = self.engine.last_grad_norm
        logs["step"] = state.global_step
        self.log_history.append(logs)
        logger.info("tiered cache: %s", {k: round(v, 4) for k, v in logs.items() if k.startswith("tiered/")})

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        if self.engine is not None:
            self.summary = self.engine.summary()
            self.engine.detach()
            self.engine = None
        self._ready = False

    def __enter__(self) -> TieredCacheCallback:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False
