"""Optional recovery after pruning: a short LoRA fine-tune through PEFT on calibration text, merged back.

Merging leaves plain ``nn.Linear`` modules of the pruned shapes, so the recovered model saves and reloads exactly
like a pruned one. Our choices: LoRA on every attention and MLP projection, AdamW, constant learning rate,
next-token loss on calibration windows drawn with ``seed + 1`` (different windows from those used for scoring).
"""

from __future__ import annotations

import time

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

from ..common.arch import get_arch
from ..common.data import calibration_batches
from .config import StructuredPruningConfig

logger = logging.get_logger(__name__)


def lora_recover(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: StructuredPruningConfig,
                 progress: bool = True) -> dict:
    """Fine-tune LoRA adapters for ``cfg.recovery_steps`` steps and merge them into ``model`` (in place).

    Returns:
        ``{"losses": [...], "seconds": ...}``: the training loss of every step.
    """
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    if tokenizer is None:
        raise ValueError("LoRA recovery trains on calibration text and needs a tokenizer.")
    arch = get_arch(model)
    targets = sorted({p.rpartition(".")[2] for p in arch.linears})
    ids = calibration_batches(tokenizer, cfg.calibration, cfg.recovery_samples, cfg.seqlen, cfg.seed + 1)
    device = next(model.parameters()).device
    start = time.perf_counter()
    lora = LoraConfig(r=cfg.recovery_rank, lora_alpha=2 * cfg.recovery_rank, lora_dropout=0.0,
                      target_modules=targets, task_type="CAUSAL_LM")
    # PEFT refuses models that look quantized; ours holds plain nn.Linear modules, so hide the flag while training.
    flags = {k: getattr(model, k, None) for k in ("is_quantized", "hf_quantizer")}
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}  # PEFT freezes the base weights
    model.is_quantized, model.hf_quantizer = False, None
    torch.manual_seed(cfg.seed)
    peft_model = get_peft_model(model, lora)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.recovery_lr)
    was_training = model.training
    peft_model.train()
    losses = []
    try:
        for step in tqdm(range(cfg.recovery_steps), desc="LoRA recovery", disable=not progress, leave=False):
            s = (step * cfg.recovery_batch_size) % len(ids)
            batch = ids[s : s + cfg.recovery_batch_size].to(device)
            loss = peft_model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        merged = peft_model.merge_and_unload()
        merged.train(was_training)
        for k, v in flags.items():
            setattr(merged, k, v)
    if merged is not model:
        raise RuntimeError("PEFT returned a different model object after merging; recovery cannot be in place.")
    for name, p in model.named_parameters():
        p.requires_grad_(trainable.get(name, False))
    return {"losses": losses, "seconds": time.perf_counter() - start}
