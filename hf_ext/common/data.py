"""Text data for calibration and evaluation, through ``datasets``.

Sources:
    * ``"wikitext2"`` / ``"c4"``: the standard ``load_dataset`` code paths of the SparseGPT / Wanda protocol (need
      network or a populated ``datasets`` cache).
    * a local file or folder: the ``datasets`` "text" builder, one document per file (``.txt``, ``.rst``, ``.md``),
      or a ``.jsonl`` / ``.json`` file with a ``text`` column.
    * ``"pydocs"``: English reST from Debian's ``python3.11-doc`` package. Our split (a choice, documented here):
      the ``library/`` section, files sorted by path, is the evaluation part; every other section (tutorial, howto,
      faq, reference, ...) is the calibration part. The split is by document, so no text is in both.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging

logger = logging.get_logger(__name__)

PYDOCS_ROOT = "/usr/share/doc/python3.11/html/_sources"
KNOWN_SOURCES = ("pydocs", "wikitext2", "c4")
CALIBRATION_SPLITS = ("calibration", "train")
EVAL_SPLITS = ("eval", "test", "validation")
_TEXT_SUFFIXES = (".txt", ".rst", ".md")


class DataSourceError(ValueError):
    """Raised for an unknown or unusable text source."""


def _split_kind(split: str) -> str:
    if split in CALIBRATION_SPLITS:
        return "calibration"
    if split in EVAL_SPLITS:
        return "eval"
    raise DataSourceError(f"Unknown split {split!r}; use one of {CALIBRATION_SPLITS + EVAL_SPLITS}.")


def pydocs_root() -> Path:
    """Root of the python3.11-doc reST sources (``$HF_EXT_PYDOCS`` overrides the Debian path)."""
    root = Path(os.environ.get("HF_EXT_PYDOCS", PYDOCS_ROOT))
    if not root.is_dir():
        raise FileNotFoundError(
            f"The 'pydocs' text source needs Debian's python3.11-doc package, not found at {root}. "
            "Install it with: apt-get install -y python3.11-doc (or pass a local folder or a datasets name)."
        )
    return root


def pydocs_files(split: str) -> list[Path]:
    root = pydocs_root()
    kind = _split_kind(split)
    files = sorted(p for p in root.rglob("*.rst.txt") if p.is_file())
    library = [p for p in files if p.relative_to(root).parts[0] == "library"]
    rest = [p for p in files if p.relative_to(root).parts[0] != "library"]
    return library if kind == "eval" else rest


def _local_documents(path: Path) -> list[str]:
    from datasets import load_dataset

    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.name.endswith(_TEXT_SUFFIXES))
        if not files:
            raise DataSourceError(f"Folder {path} holds no text files ({', '.join(_TEXT_SUFFIXES)}).")
        ds = load_dataset("text", data_files=files, sample_by="document", split="train")
    elif path.suffix in (".jsonl", ".json"):
        ds = load_dataset("json", data_files=str(path), split="train")
        if "text" not in ds.column_names:
            raise DataSourceError(f"{path} has no 'text' column (columns: {ds.column_names}).")
    else:
        ds = load_dataset("text", data_files=str(path), sample_by="document", split="train")
    return [t for t in ds["text"] if t and t.strip()]


def load_text(source: str | os.PathLike, split: str = "eval") -> list[str]:
    """Documents of ``source`` for ``split`` ("calibration"/"train" or "eval"/"test"/"validation").

    Raises:
        DataSourceError: unknown source name or split.
        FileNotFoundError: a path that does not exist, or ``pydocs`` without python3.11-doc installed.
    """
    kind = _split_kind(split)
    name = str(source)
    if name == "pydocs":
        files = pydocs_files(split)
        from datasets import load_dataset

        ds = load_dataset("text", data_files=[str(p) for p in files], sample_by="document", split="train")
        return [t for t in ds["text"] if t.strip()]
    if name in ("wikitext2", "wikitext"):
        from datasets import load_dataset

        ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="train" if kind == "calibration" else "test")
        return ["\n\n".join(ds["text"])] if kind == "eval" else [t for t in ds["text"] if t.strip()]
    if name == "c4":
        from datasets import load_dataset

        files = {"calibration": "en/c4-train.00000-of-01024.json.gz", "eval": "en/c4-validation.00000-of-00008.json.gz"}
        ds = load_dataset("allenai/c4", data_files={"x": files[kind]}, split="x")
        return list(ds["text"])
    path = Path(name).expanduser()
    if path.exists():
        return _local_documents(path)
    if os.sep in name or name.startswith((".", "~")) or Path(name).suffix:
        raise FileNotFoundError(f"Text source {name!r} looks like a path but does not exist.")
    raise DataSourceError(
        f"Unknown text source {name!r}; use one of {', '.join(KNOWN_SOURCES)} or a local file or folder."
    )


def window_bos_id(tokenizer: PreTrainedTokenizerBase, add_bos: bool | str) -> int | None:
    """The BOS id to start each window with: "auto" uses it when the tokenizer adds one itself."""
    if add_bos == "auto":
        probe = tokenizer("a").input_ids
        add_bos = tokenizer.bos_token_id is not None and len(probe) > 0 and probe[0] == tokenizer.bos_token_id
    if add_bos and tokenizer.bos_token_id is None:
        raise ValueError("add_bos=True but the tokenizer has no BOS token.")
    return tokenizer.bos_token_id if add_bos else None


def tokenize_stream(
    tokenizer: PreTrainedTokenizerBase, documents: list[str], max_tokens: int | None = None, sep: str = "\n\n"
) -> torch.Tensor:
    """Token ids of the documents joined with ``sep``, without special tokens.

    With ``max_tokens``, only a prefix of the documents long enough for that many tokens is tokenized (the join is
    grown until it suffices), which keeps a 12 MB corpus cheap when a few windows are wanted.
    """
    if not documents:
        raise DataSourceError("No documents to tokenize.")
    take = len(documents)
    if max_tokens is not None:
        chars, take = 0, 0
        while take < len(documents) and chars < max_tokens * 6:
            chars += len(documents[take]) + len(sep)
            take += 1
    while True:
        ids = tokenizer(sep.join(documents[:take]), add_special_tokens=False, return_tensors="pt").input_ids[0]
        if max_tokens is None or len(ids) >= max_tokens or take == len(documents):
            return ids
        take = min(len(documents), take * 2)


def calibration_batches(
    tokenizer: PreTrainedTokenizerBase,
    source: str | os.PathLike = "pydocs",
    n_samples: int = 128,
    seqlen: int = 512,
    seed: int = 0,
    split: str = "calibration",
    add_bos: bool | str = "auto",
) -> torch.Tensor:
    """``(n_samples, seqlen)`` token windows at reproducible random offsets of the shuffled calibration documents.

    Each window starts with BOS when the model uses one (then ``seqlen - 1`` text tokens follow).
    """
    if n_samples <= 0:
        raise ValueError(f"n_samples must be > 0, got {n_samples}.")
    if seqlen <= 1:
        raise ValueError(f"seqlen must be > 1, got {seqlen}.")
    docs = load_text(source, split)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(docs), generator=gen).tolist()
    bos = window_bos_id(tokenizer, add_bos)
    body = seqlen - (bos is not None)
    # Four times the tokens needed gives the random offsets room without tokenizing a whole corpus.
    stream = tokenize_stream(tokenizer, [docs[i] for i in order], max_tokens=4 * n_samples * body)
    if len(stream) < body + 1:
        raise DataSourceError(f"Source {source!r} has {len(stream)} tokens, fewer than one window of {seqlen}.")
    starts = torch.randint(0, len(stream) - body, (n_samples,), generator=gen)
    windows = torch.stack([stream[s : s + body] for s in starts.tolist()])
    if bos is not None:
        windows = torch.cat([torch.full((n_samples, 1), bos, dtype=windows.dtype), windows], dim=1)
    return windows
