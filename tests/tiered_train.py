"""The tiny-OPT training loop the tiered-cache tests compare with and without the cache (one copy for every file)."""

from __future__ import annotations

import torch

from hf_ext.common.models import tiny_model
from hf_ext.tiered_cache.attach import TieredEngine


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 300, (2, 16), generator=g) for _ in range(n)]


def train(cfg=None, steps=3, accum=1, clip=None, hook=None, extra_forward=False):
    """``steps`` AdamW steps of ``accum`` micro-batches; ``cfg=None`` trains without the cache (clipping then by
    ``clip_grad_norm_``). ``extra_forward`` adds a forward with autograd on and no backward before each micro-batch
    (a logged loss), and tells the engine the accumulation as the Trainer callback does. Returns (losses, final
    parameters, the engine's summary or None)."""
    model, _ = tiny_model("opt")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    eng = None
    if cfg is not None:
        eng = TieredEngine(cfg, model, opt, max_grad_norm=clip, accumulation_steps=accum if extra_forward else None)
    losses = []
    try:
        for step, chunk in enumerate(zip(*[iter(batches(steps * accum))] * accum)):
            for ids in chunk:
                if extra_forward:
                    model(input_ids=ids, labels=ids)
                loss = model(input_ids=ids, labels=ids).loss / accum
                loss.backward()
                losses.append(loss.item())
            if clip and eng is None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            opt.zero_grad()
            if hook is not None:
                hook(step, eng)
        summary = eng.summary() if eng is not None else None
    finally:
        if eng is not None:
            eng.detach()
    return losses, [p.detach().clone() for p in model.parameters()], summary
