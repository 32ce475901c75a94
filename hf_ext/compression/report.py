"""What a compression run did: per-layer sparsity table, achieved global sparsity, allocation plot.

Sparsity is counted against the pruning masks hf-ext set (weights that were already exactly zero before pruning
and were kept count as kept), so the numbers measure the method, not the checkpoint it started from.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..common.plots import new_figure, save_figure
from ..common.utils import atomic_write_text


@dataclass
class LayerRow:
    name: str
    block: int
    target: float
    achieved: float
    kept: int
    numel: int
    disk_bytes: int = 0  # packed buffers as saved (bias excluded)
    resident_bytes: int = 0  # parameters + buffers + dense cache in memory


@dataclass
class CompressionReport:
    """Outcome of one compression run (``model.compression_report`` after ``compress`` / ``from_pretrained``)."""

    settings: str
    allocation: str
    block_targets: list[float]
    layers: list[LayerRow] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def achieved_sparsity(self) -> float:
        numel = sum(r.numel for r in self.layers)
        return 1.0 - sum(r.kept for r in self.layers) / numel if numel else 0.0

    @property
    def target_sparsity(self) -> float:
        numel = sum(r.numel for r in self.layers)
        return sum(r.target * r.numel for r in self.layers) / numel if numel else 0.0

    @property
    def disk_bytes(self) -> int:
        return sum(r.disk_bytes for r in self.layers)

    @property
    def resident_bytes(self) -> int:
        return sum(r.resident_bytes for r in self.layers)

    def block_achieved(self) -> list[float]:
        out = []
        for b in range(len(self.block_targets)):
            rows = [r for r in self.layers if r.block == b]
            numel = sum(r.numel for r in rows)
            out.append(1.0 - sum(r.kept for r in rows) / numel if numel else 0.0)
        return out

    def to_markdown(self) -> str:
        lines = [
            f"Settings: {self.settings}",
            f"Achieved global sparsity over prunable linears (counted on the masks): {self.achieved_sparsity:.4f} "
            f"(allocated {self.target_sparsity:.4f}); {len(self.layers)} linears; {self.seconds:.1f} s; "
            f"peak RSS {self.peak_rss_mib:.0f} MiB",
            f"Compressed linears: {self.disk_bytes / 2**20:.2f} MiB on disk, {self.resident_bytes / 2**20:.2f} MiB "
            f"resident in memory (parameters + buffers + dense weight cache; dense fp16 would be "
            f"{2 * sum(r.numel for r in self.layers) / 2**20:.2f} MiB)",
            *self.notes,
            "",
            "| layer | block | allocated | achieved | kept | weights | disk bytes | resident bytes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {r.name} | {r.block} | {r.target:.4f} | {r.achieved:.4f} | {r.kept} | {r.numel} | "
                  f"{r.disk_bytes} | {r.resident_bytes} |" for r in self.layers]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {**asdict(self), "achieved_sparsity": self.achieved_sparsity, "target_sparsity": self.target_sparsity,
                "disk_bytes": self.disk_bytes, "resident_bytes": self.resident_bytes}

    def save(self, folder: str | os.PathLike, stem: str = "compression_report") -> dict[str, Path]:
        """Write ``<stem>.md`` (the table) and ``<stem>.png`` (the allocation plot) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{stem}.md"
        atomic_write_text(md, self.to_markdown())
        png = folder / f"{stem}.png"
        plot_allocations({self.allocation: self.block_achieved()}, png, title=self.settings)
        return {"markdown": md, "plot": png}


def plot_allocations(series: dict[str, list[float]], path: str | os.PathLike, title: str = "") -> Path:
    """PNG line plot of per-block sparsity, one line per named allocation (atomically written; the user's matplotlib
    backend and pyplot state are left alone)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure()
    for label, values in series.items():
        ax.plot(range(len(values)), [100 * v for v in values], marker="o", ms=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # block numbers are whole numbers
    ax.set_xlabel("decoder block")
    ax.set_ylabel("sparsity (%)")
    if title:
        ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
