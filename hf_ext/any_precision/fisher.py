"""Diagonal Fisher information of linear weights: the sum over calibration windows of squared gradients.

One forward + backward of the full model per window (batch size 1), with gradients enabled only for the target
weights; each weight's gradient is squared into an accumulator and freed as soon as it is produced, so peak memory
is the model, one window's activations and one float32 accumulator per target weight. For Gemma 3 270M at 512
tokens that is about 2-3 GB on the CPU (the 262k-token logits dominate). This is the SqueezeLLM sensitivity the
paper's seed model uses; computing it block by block would need per-block gradients of the final loss and is not
what the paper does.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from ..common.utils import requires_grad_only


def fisher_diagonal(
    model: nn.Module, input_ids: torch.Tensor, modules: dict[str, nn.Module], progress: bool = True
) -> dict[str, torch.Tensor]:
    """``{name: sum over windows of (d loss / d W)**2}`` for the ``weight`` of each module in ``modules``.

    The causal-LM loss of each window (``model(ids, labels=ids).loss``) is differentiated on its own, as in
    SqueezeLLM. ``requires_grad`` flags and the training mode are restored afterwards.
    """
    params = {name: mod.weight for name, mod in modules.items()}
    acc = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = model.training
    handles = []
    try:
        with requires_grad_only(model, params.values()):
            for name, p in params.items():

                def hook(param: torch.Tensor, a: torch.Tensor = acc[name]) -> None:
                    a.add_(param.grad.float().square())
                    param.grad = None

                handles.append(p.register_post_accumulate_grad_hook(hook))
            model.eval()
            device = next(iter(params.values())).device
            for row in tqdm(input_ids, desc="fisher", disable=not progress):
                ids = row.unsqueeze(0).to(device)
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"Calibration loss is {loss.item()}; cannot compute gradients for the Fisher weights.")
                loss.backward()
    finally:
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
    return acc
