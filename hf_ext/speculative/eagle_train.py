"""Training an :class:`~.eagle.EagleDraftModel` with ``transformers.Trainer`` on features the target computes on user
text.

1. Windows of the text (``hf_ext.common.data.calibration_batches``: BOS first, reproducible offsets).
2. One target pass per window (no grad) gives, per token, its last hidden state ``f_t`` (LM head input), its input
   embedding ``e_t``, and the target's own choice of the next token restricted to the draft vocabulary (the
   argmax of ``f_t @ W_head[d2t]^T``; our choice: it avoids the full 262k-token head on Gemma 3, and a token
   outside the draft vocabulary can never be proposed anyway).
3. ``Trainer`` fits the draft on ``(f_t, e_{t+1}) -> (o_t ~ f_{t+1}, token at t + 2)``: self-distillation
   towards what greedy verification accepts, in the EAGLE-1 way (features of the target, not regenerated text).

Progress: tqdm over the feature pass, the Trainer's own progress bar; the loss history is returned and, with an
output folder, written as ``training_log.json`` and ``loss_curve.png`` beside the saved draft.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainingArguments
from transformers.utils import logging

from ..common.config import ConfigMixin
from ..common.data import calibration_batches, load_text
from ..common.utils import atomic_dir, check_output_dir
from .drafts import frequency_vocab
from .eagle import EagleDraftModel, eagle_config_for

logger = logging.get_logger(__name__)


@dataclass
class EagleTrainingConfig(ConfigMixin):
    """How :func:`train_eagle_draft` builds and trains a draft (every default is our choice, sized for a CPU).

    Args:
        num_layers: Decoder layers of the draft.
        draft_vocab_size: Tokens of the draft head (the most frequent of the training text, specials included).
        data: Text source (``hf_ext.common.data.load_text``: "pydocs", a local file or folder, ...).
        n_samples: Training windows.
        seqlen: Tokens per window.
        max_steps: Optimizer steps.
        batch_size: Windows per step.
        learning_rate: Peak AdamW learning rate (cosine decay after a linear warm-up).
        warmup_steps: Warm-up steps.
        vocab_documents: Documents of ``data`` whose token counts rank the draft vocabulary.
        feature_batch: Windows per target forward when computing the features.
        unroll: Training passes per batch (see ``EagleDraftConfig.train_unroll``; 1 is EAGLE-1's training).
        seed: Seed of the windows and of the draft's initialisation.
    """

    num_layers: int = field(default=1, metadata={"help": "decoder layers of the draft"})
    draft_vocab_size: int = field(default=8192, metadata={"help": "tokens of the draft head"})
    data: str = field(default="pydocs", metadata={"help": "training text source"})
    n_samples: int = field(default=64, metadata={"help": "training windows"})
    seqlen: int = field(default=256, metadata={"help": "tokens per window"})
    max_steps: int = field(default=150, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={"help": "windows per step"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak AdamW learning rate"})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps"})
    vocab_documents: int = field(default=400, metadata={"help": "documents ranking the draft vocabulary"})
    feature_batch: int = field(default=4, metadata={"help": "windows per target forward for the features"})
    unroll: int = field(default=1, metadata={"help": "training passes per batch (training-time test when > 1)"})
    seed: int = field(default=0, metadata={"help": "seed of windows and initialisation"})

    def __post_init__(self) -> None:
        self.check_types()
        for name in ("num_layers", "draft_vocab_size", "n_samples", "max_steps", "batch_size", "vocab_documents",
                     "feature_batch", "unroll"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.seqlen < 3:
            raise ValueError(f"seqlen must be >= 3, got {self.seqlen}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")


@dataclass
class EagleTrainingResult:
    """The trained draft, its loss history ``[(step, loss)]``, and the seconds spent on features and training."""

    draft: EagleDraftModel
    losses: list[tuple[int, float]]
    feature_seconds: float
    train_seconds: float


@dataclass
class DraftFeatures:
    """What the target computed once on the training windows; reusable for drafts of several depths."""

    d2t: torch.Tensor
    feats: torch.Tensor
    embeds: torch.Tensor
    labels: torch.Tensor
    seconds: float


def prepare_features(target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: EagleTrainingConfig,
                     progress: bool = True) -> DraftFeatures:
    """Rank the draft vocabulary on ``config.data`` and compute the target's features on its training windows."""
    vocab = target.config.get_text_config().vocab_size
    if config.draft_vocab_size > vocab:
        raise ValueError(f"draft_vocab_size {config.draft_vocab_size} exceeds the target's vocabulary ({vocab}).")
    texts = load_text(config.data, "calibration")
    always = [t for t in (tokenizer.eos_token_id, tokenizer.bos_token_id) if t is not None]
    d2t = frequency_vocab(tokenizer, texts[:config.vocab_documents], min(config.draft_vocab_size, len(tokenizer)),
                          always=always)
    windows = calibration_batches(tokenizer, config.data, n_samples=config.n_samples, seqlen=config.seqlen,
                                  seed=config.seed)
    t0 = time.perf_counter()
    was_training = target.training
    target.eval()
    feats, embeds, labels = compute_features(target, windows, d2t, config.feature_batch, progress)
    target.train(was_training)
    return DraftFeatures(d2t, feats, embeds, labels, time.perf_counter() - t0)


class FeatureDataset(torch.utils.data.Dataset):
    """Draft training examples, one per window: inputs at draft positions ``0 .. T-2`` and their targets."""

    def __init__(self, feats: torch.Tensor, embeds: torch.Tensor, labels: torch.Tensor) -> None:
        self.feats, self.embeds, self.labels = feats, embeds, labels

    def __len__(self) -> int:
        return self.feats.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = self.feats.shape[1]
        return {"hidden_states": self.feats[i, :-1], "inputs_embeds": self.embeds[i, 1:],
                "target_hidden": self.feats[i, 1:], "labels": self.labels[i, 1:],
                "position_ids": torch.arange(1, t)}


@torch.no_grad()
def compute_features(target: PreTrainedModel, windows: torch.Tensor, d2t: torch.Tensor, batch: int = 4,
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(features, embeddings, labels)`` of ``windows (N, T)``: the target's last hidden states and input
    embeddings ``(N, T, H)`` (float32, on CPU) and the draft-vocabulary index of its choice at each token."""
    device = target.device
    head = target.get_output_embeddings().weight[d2t.to(device)]
    decoder, embed = target.get_decoder(), target.get_input_embeddings()
    feats, embeds, labels = [], [], []
    for i in tqdm(range(0, len(windows), batch), desc="target features", disable=not progress):
        ids = windows[i:i + batch].to(device)
        hidden = decoder(input_ids=ids).last_hidden_state
        feats.append(hidden.float().cpu())
        embeds.append(embed(ids).float().cpu())
        labels.append((hidden @ head.T).argmax(-1).cpu())
    return torch.cat(feats), torch.cat(embeds), torch.cat(labels)


def train_eagle_draft(target: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      config: EagleTrainingConfig | None = None, target_name: str | None = None,
                      output_dir: str | None = None, overwrite: bool = False, progress: bool = True,
                      features: DraftFeatures | None = None) -> EagleTrainingResult:
    """Train an EAGLE-style draft for ``target`` on ``config.data``; save it to ``output_dir`` when given.

    ``features`` (from :func:`prepare_features` with the same data settings) skips the target pass.
    """
    config = config or EagleTrainingConfig()
    if output_dir is not None:
        check_output_dir(output_dir, overwrite)  # before any heavy work
    features = features or prepare_features(target, tokenizer, config, progress)
    d2t, feats, embeds, labels = features.d2t, features.feats, features.embeds, features.labels
    feature_seconds = features.seconds

    torch.manual_seed(config.seed)
    draft_config = eagle_config_for(target, config.num_layers, int(d2t.numel()), target_name=target_name,
                                    training_data=f"{config.n_samples} windows x {config.seqlen} tokens of "
                                                  f"{config.data!s} (calibration split), {config.max_steps} steps",
                                    train_unroll=config.unroll)
    draft = EagleDraftModel(draft_config)
    draft.d2t.copy_(d2t)
    draft.init_head_from_target(target)
    draft.to(target.device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=config.batch_size, max_steps=config.max_steps,
            learning_rate=config.learning_rate, lr_scheduler_type="cosine", warmup_steps=config.warmup_steps,
            adam_beta2=0.95, max_grad_norm=0.5, weight_decay=0.0, logging_steps=max(1, config.max_steps // 50),
            save_strategy="no", report_to=[], disable_tqdm=not progress, seed=config.seed, data_seed=config.seed,
            dataloader_num_workers=0, remove_unused_columns=False, use_cpu=target.device.type == "cpu",
        )
        trainer = Trainer(model=draft, args=args, train_dataset=FeatureDataset(feats, embeds, labels))
        trainer.train()
    train_seconds = time.perf_counter() - t0
    losses = [(int(e["step"]), float(e["loss"])) for e in trainer.state.log_history if "loss" in e]
    draft.eval()
    draft.bind_target(target)
    if output_dir is not None:
        save_draft(draft, output_dir, losses, config, feature_seconds, train_seconds, overwrite=overwrite)
    return EagleTrainingResult(draft, losses, feature_seconds, train_seconds)


def save_draft(draft: EagleDraftModel, output_dir: str, losses: list[tuple[int, float]], config: EagleTrainingConfig,
               feature_seconds: float, train_seconds: float, overwrite: bool = False) -> Path:
    """``save_pretrained`` plus ``training_log.json`` and ``loss_curve.png``, atomically."""
    from ..common.plots import new_figure, save_figure

    with atomic_dir(output_dir, overwrite=overwrite) as tmp:
        draft.save_pretrained(tmp)
        log = {"config": config.to_dict(), "losses": losses, "feature_seconds": feature_seconds,
               "train_seconds": train_seconds}
        (Path(tmp) / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")
        fig, ax = new_figure(6.0, 3.4)
        if losses:
            ax.plot([s for s, _ in losses], [v for _, v in losses], marker=".")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss (CE + feature Smooth-L1)")
        ax.set_title(f"EAGLE draft, {draft.config.num_hidden_layers} layer(s), {draft.config.draft_vocab_size} tokens")
        ax.grid(alpha=0.3)
        save_figure(fig, Path(tmp) / "loss_curve.png")
    return Path(output_dir)
