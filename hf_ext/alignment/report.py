"""The per-iteration report of a run: JSON for machines, a PNG for people."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..common.utils import atomic_write_json
from .filtering import REASONS


@dataclass
class IterationReport:
    """One round: what was generated, kept and rejected (by reason), the SFT loss and the held-out score."""

    iteration: int
    generated: int
    kept: int
    rejected: dict = field(default_factory=dict)
    train_samples: int = 0
    sft_loss: float | None = None
    heldout: dict | None = None
    seconds: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def save_report(folder: str | Path, iterations: list[IterationReport], meta: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.png`` into ``folder`` (each atomically)."""
    folder = Path(folder)
    json_path = folder / "report.json"
    atomic_write_json(json_path, {**meta, "iterations": [r.to_dict() for r in iterations]})
    png_path = folder / "report.png"
    plot_report(iterations, png_path, baseline=meta.get("baseline_heldout"))
    return json_path, png_path


def plot_report(iterations: list[IterationReport], path: str | Path, baseline: dict | None = None) -> None:
    """Stacked kept / rejected-by-reason bars per round, beside held-out score (with CI) and SFT loss."""
    import os
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r.iteration for r in iterations]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    bottom = [0] * len(its)
    for name, values in [("kept", [r.kept for r in iterations])] + [
            (reason, [r.rejected.get(reason, 0) for r in iterations]) for reason in REASONS]:
        if any(values):
            ax1.bar(its, values, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, values)]
    ax1.set(xlabel="iteration", ylabel="generated samples", title="kept / rejected by reason")
    ax1.legend(fontsize=7)
    scored = [r for r in iterations if r.heldout]
    if scored:
        x = [r.iteration for r in scored]
        m = [r.heldout["mean"] for r in scored]
        err = [[a - r.heldout["ci_low"] for a, r in zip(m, scored)],
               [r.heldout["ci_high"] - a for a, r in zip(m, scored)]]
        ax2.errorbar(x, m, yerr=err, marker="o", capsize=3, label="held-out score (95% CI)")
    if baseline:
        ax2.axhline(baseline["mean"], color="grey", ls="--", label="before (iteration 0)")
    ax2.set(xlabel="iteration", ylabel="score", title="held-out score and SFT loss")
    losses = [(r.iteration, r.sft_loss) for r in iterations if r.sft_loss is not None]
    if losses:
        ax3 = ax2.twinx()
        ax3.plot(*zip(*losses), color="tab:red", marker="s", ls=":", label="SFT loss")
        ax3.set_ylabel("SFT loss")
        ax3.legend(loc="lower right", fontsize=7)
    ax2.legend(loc="upper left", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
