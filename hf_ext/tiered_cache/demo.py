"""``hf-ext demo`` row: a tiny-shape OPT trained under the tiered cache with the NVMe tier (device budget 25 % of
its training state) vs the same steps all in memory. Seconds; the shape is tiny, so the ratio shows overheads, not
the benchmark's figure (``benchmarks/tiered_cache.py``)."""

from __future__ import annotations


def demo_rows(model, tokenizer, ctx) -> list:
    from ..common.demo import DemoRow
    from .bench import quick_comparison

    res = quick_comparison("tiny", steps=3)
    ours, floor = res["ours"], res["floor"]
    s = ours.stats
    return [DemoRow("tiered cache (10Cache)", "tiny OPT, device 25 % of state, rest NVMe, Belady + prefetch",
                    "step time / in-memory", ours.median / floor.median, baseline=1.0,
                    note=f"device hit rate {s['device_hit_rate']:.1%}; {s['io_mode']}; losses equal: "
                         f"{ours.losses == floor.losses}")]
