"""PNG figures without touching the user's matplotlib state: a bare ``Figure`` (no pyplot, no backend switch)."""

from __future__ import annotations

import os
from pathlib import Path


def new_figure(width: float = 7.0, height: float = 3.6, dpi: int = 110, ncols: int = 1, nrows: int = 1):
    """``(figure, axes)`` of a standalone ``matplotlib.figure.Figure``: pyplot's global state is never used."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    axes = fig.subplots(nrows, ncols)
    return fig, axes


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
