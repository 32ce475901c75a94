"""Membership-inference data in WikiMIA's format (one row per text: ``input`` string, ``label`` 1 = member,
0 = non-member), read through ``datasets``: a local ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, or a Hub
dataset such as ``swj0419/WikiMIA`` (splits ``WikiMIA_length32`` / ``64`` / ``128`` / ``256``; needs network or
the ``datasets`` cache)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .metrics import check_labels

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class MIAData:
    """Texts and their 0/1 membership labels (``labels`` is None when the file has no label column)."""

    texts: list[str]
    labels: list[int] | None

    def __len__(self) -> int:
        return len(self.texts)


def load_mia_dataset(
    source: str | os.PathLike,
    split: str = "train",
    text_column: str = "input",
    label_column: str | None = "label",
    require_labels: bool = True,
) -> MIAData:
    """Load membership-inference texts and labels.

    Args:
        source: a local data file or a Hub dataset id.
        split: the split to read (a local file is one ``"train"`` split).
        text_column / label_column: column names (WikiMIA: ``input`` / ``label``).
        require_labels: raise when the label column is missing (else return ``labels=None``).

    Raises:
        FileNotFoundError: a path-like source that does not exist.
        ValueError: a missing column, empty texts, or labels that are not 0/1.
    """
    from datasets import load_dataset

    path = Path(source).expanduser()
    if path.suffix in _BUILDERS or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"Membership data file {str(path)!r} does not exist.")
        builder = _BUILDERS.get(path.suffix)
        if builder is None:
            raise ValueError(f"Unsupported data file {path.name!r}; use one of {sorted(_BUILDERS)}.")
        ds = load_dataset(builder, data_files=str(path), split="train")
    else:
        ds = load_dataset(str(source), split=split)
    if text_column not in ds.column_names:
        raise ValueError(f"{source} has no text column {text_column!r} (columns: {ds.column_names}).")
    texts = list(ds[text_column])
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"{source}: rows {bad[:5]} have an empty or non-string {text_column!r}.")
    labels = None
    if label_column is not None and label_column in ds.column_names:
        column = f"column {label_column!r}"
        labels = check_labels(ds[label_column], len(texts), name=column, both_classes=False).tolist()
    elif require_labels:
        raise ValueError(f"{source} has no label column {label_column!r} (columns: {ds.column_names}).")
    return MIAData(texts, labels)
