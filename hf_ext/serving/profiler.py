"""``hf-ext serve profile``: measure each level's service time per batch size and quality per task on this machine.

Service time: median wall time of ``level.generate`` on a batch of task prompts (after one warm-up batch), for each
batch size; its coefficient of variation over the repeats is the simulator's noise. Quality per task (our
definition, stated in the profile's meta): for in-process models, teacher-forced next-token top-1 accuracy on the
task's held-out texts; for remote levels (no logits), ROUGE-L F1 of the greedy continuation against the text's real
continuation. Levels that share one model (any-precision widths) are also timed right after a switch, and the
switch's extra cost as a fraction of a batch is recorded (``meta["switch_overhead"]``).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from .levels import HFModelLevel, Level
from .profile import LevelProfile, ServingProfile

logger = logging.get_logger(__name__)


def default_tasks(source: str = "pydocs", n_tasks: int = 2, texts_per_task: int = 8,
                  chars: int = 800) -> dict[str, list[str]]:
    """Tasks cut from a text source: its documents in ``n_tasks`` contiguous groups (different sections of the
    python docs by default), ``texts_per_task`` passages of ``chars`` characters each (our choice)."""
    from ..common.data import load_text

    docs = [d for d in load_text(source, split="eval") if len(d) >= chars]
    if len(docs) < n_tasks:
        raise ValueError(f"{source!r} has {len(docs)} documents of {chars}+ characters; need {n_tasks}.")
    per = len(docs) // n_tasks
    prefix = os.path.basename(str(source).rstrip("/")) or "text"
    return {f"{prefix}-{k}": [d[:chars] for d in docs[k * per:(k + 1) * per][:texts_per_task]] for k in range(n_tasks)}


@torch.no_grad()
def token_accuracy(level: HFModelLevel, texts: list[str], max_tokens: int = 128) -> float:
    correct = total = 0
    with level.lock:
        level._prepare()
        for t in texts:
            ids = level.tokenizer(t, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
            pred = level.model(input_ids=ids).logits[0, :-1].argmax(-1)
            correct += int((pred == ids[0, 1:]).sum())
            total += ids.shape[1] - 1
    return correct / max(total, 1)


def rouge_quality(level: Level, texts: list[str], max_new_tokens: int) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    prompts = [t[: len(t) // 2] for t in texts]
    gens = _generate(level, prompts, max_new_tokens)
    return statistics.mean(scorer.score(t[len(t) // 2:][: 4 * max_new_tokens], g.text)["rougeL"].fmeasure
                           for t, g in zip(texts, gens))


_LOOP: asyncio.AbstractEventLoop | None = None


def _run(coro):
    """One event loop for every remote call of a profiling run (an httpx client must stay on one loop)."""
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)


def _generate(level: Level, prompts: list[str], max_new_tokens: int):
    if isinstance(level, HFModelLevel):
        return level.generate_sync(prompts, [max_new_tokens] * len(prompts), 0.0)
    return _run(level.generate(prompts, [max_new_tokens] * len(prompts), 0.0, [None] * len(prompts)))


def _time_batch(level: Level, prompts: list[str], max_new_tokens: int) -> float:
    start = time.perf_counter()
    _generate(level, prompts, max_new_tokens)
    return time.perf_counter() - start


def measure_profile(levels: list[Level], tasks: dict[str, list[str]], batch_sizes: tuple[int, ...] = (1, 2, 4, 8),
                    max_new_tokens: int = 16, repeats: int = 3, prompt_chars: int = 200,
                    progress: bool = True) -> ServingProfile:
    """Measure a :class:`ServingProfile` of ``levels`` on ``tasks`` (name -> texts)."""
    if not tasks or any(not v for v in tasks.values()):
        raise ValueError("tasks must map each task name to at least one text.")
    if repeats < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"repeats must be >= 1 and batch_sizes positive, got {repeats} and {batch_sizes}.")
    sizes = sorted(set(int(b) for b in batch_sizes))
    pool = [t[:prompt_chars] for texts in tasks.values() for t in texts]
    out, switch = [], {}
    bar = tqdm(total=len(levels) * (len(sizes) + 1), desc="profiling", disable=not progress)
    for lv in levels:
        _time_batch(lv, pool[:1], max_new_tokens)  # warm-up (and the dense cache of this width)
        medians, cvs = [], []
        for b in sizes:
            prompts = [pool[i % len(pool)] for i in range(b)]
            ts = [_time_batch(lv, prompts, max_new_tokens) for _ in range(repeats)]
            medians.append(statistics.median(ts))
            cvs.append(statistics.pstdev(ts) / statistics.mean(ts) if len(ts) > 1 else 0.0)
            bar.update()
        quality = {}
        for name, texts in tasks.items():
            quality[name] = token_accuracy(lv, texts) if isinstance(lv, HFModelLevel) else rouge_quality(
                lv, texts, max_new_tokens)
        bar.update()
        mem = lv.memory_mib() if hasattr(lv, "memory_mib") else None
        out.append(LevelProfile(lv.name, sizes, medians, float(statistics.mean(cvs)), quality, mem))
    bar.close()
    for a in levels:  # switching cost between levels that share one model
        for b in levels:
            if a is not b and isinstance(a, HFModelLevel) and isinstance(b, HFModelLevel) and a.model is b.model:
                _time_batch(a, pool[:1], max_new_tokens)
                same = _time_batch(a, pool[:1], max_new_tokens)
                _time_batch(b, pool[:1], max_new_tokens)
                after = _time_batch(a, pool[:1], max_new_tokens)
                switch[f"{b.name}->{a.name}"] = after / same - 1.0
    meta = {"quality": "token top-1 accuracy (in-process) / ROUGE-L F1 of continuations (remote)",
            "repeats": repeats, "prompt_chars": prompt_chars, "switch_overhead": switch,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return ServingProfile(levels=out, tasks=list(tasks), max_new_tokens=max_new_tokens, meta=meta)
