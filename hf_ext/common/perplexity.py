"""The one perplexity evaluator of hf-ext.

Protocol (SparseGPT / Wanda): the evaluation documents are joined with "\\n\\n", tokenized once, and cut into
non-overlapping windows of ``seqlen`` tokens. Where the model uses a BOS token, each window is BOS followed by
``seqlen - 1`` text tokens (Gemma 3 270M is about 3x worse without it). Every token of a window but the first is
predicted. With ``stride < seqlen`` windows overlap and only each window's last ``stride`` tokens are scored (the
first window scores all). The result states the protocol it used.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import load_text, tokenize_stream, window_bos_id


@dataclass
class PerplexityResult:
    perplexity: float
    nll: float
    n_tokens: int
    n_windows: int
    seqlen: int
    stride: int
    bos: bool
    source: str
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def protocol(self) -> str:
        return (
            f"{self.n_windows} windows of {self.seqlen} tokens (stride {self.stride}, "
            f"{'BOS first' if self.bos else 'no BOS'}), {self.n_tokens} predicted tokens of {self.source}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "tokens_per_second": self.tokens_per_second, "protocol": self.protocol}


def make_windows(ids: torch.Tensor, seqlen: int, stride: int, bos: int | None, max_windows: int | None):
    """Cut a token stream into (window, n_scored) pairs following the module's protocol."""
    body = seqlen - (bos is not None)
    out = []
    start = 0
    while start + body <= len(ids) and (max_windows is None or len(out) < max_windows):
        w = ids[start : start + body]
        if bos is not None:
            w = torch.cat([torch.tensor([bos], dtype=ids.dtype), w])
        scored = seqlen - 1 if not out else min(stride, seqlen - 1)
        out.append((w, scored))
        start += stride if stride < seqlen else body
    return out


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: str | os.PathLike | list[str] = "pydocs",
    split: str = "eval",
    seqlen: int = 512,
    stride: int | None = None,
    batch_size: int = 1,
    max_tokens: int | None = None,
    add_bos: bool | str = "auto",
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``data``: a source name or path for :func:`load_text`, or a list of texts.

    Args:
        seqlen: Window length in tokens, BOS included.
        stride: Distance between window starts; ``None`` means non-overlapping windows.
        batch_size: Windows per forward pass.
        max_tokens: Stop after about this many predicted tokens (whole windows); ``None`` evaluates everything.
        add_bos: Start each window with BOS: ``"auto"`` does when the tokenizer adds BOS itself.
    """
    if seqlen <= 1:
        raise ValueError(f"seqlen must be > 1, got {seqlen}.")
    stride = seqlen if stride is None else stride
    if stride <= 0 or stride > seqlen:
        raise ValueError(f"stride must be in 1..seqlen ({seqlen}), got {stride}.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}.")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1 or None, got {max_tokens}.")
    if isinstance(data, (list, tuple)):
        docs, source = list(data), "given texts"
    else:
        docs, source = load_text(data, split), f"{data} ({split})"
    bos = window_bos_id(tokenizer, add_bos)
    max_windows = None
    if max_tokens is not None:
        max_windows = max(1, math.ceil(max_tokens / (seqlen - 1)))
    need = None if max_windows is None else max_windows * seqlen + seqlen
    ids = tokenize_stream(tokenizer, list(docs), max_tokens=need)
    windows = make_windows(ids, seqlen, stride, bos, max_windows)
    if not windows:
        raise ValueError(f"The evaluation text has {len(ids)} tokens, fewer than one window of {seqlen}.")
    device = next(model.parameters()).device
    total_nll, total = 0.0, 0
    start = time.perf_counter()
    for i in tqdm(range(0, len(windows), batch_size), desc="perplexity", disable=not progress):
        chunk = windows[i : i + batch_size]
        batch = torch.stack([w for w, _ in chunk]).to(device)
        logits = model(input_ids=batch, use_cache=False).logits.float()
        for j, (_, scored) in enumerate(chunk):
            nll = F.cross_entropy(logits[j, -scored - 1 : -1], batch[j, -scored:], reduction="sum")
            total_nll += nll.item()
            total += scored
    seconds = time.perf_counter() - start
    return PerplexityResult(
        perplexity=math.exp(total_nll / total), nll=total_nll / total, n_tokens=total, n_windows=len(windows),
        seqlen=seqlen, stride=stride, bos=bos is not None, source=source, seconds=seconds,
    )

