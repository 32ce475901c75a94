"""``hf-ext bench serve``: an open-loop async load generator (httpx) for any OpenAI-compatible server.

Requests arrive with gamma inter-arrival times (``burstiness`` 1 = Poisson, as vLLM's ``bench serve``); the run is
bounded in requests and in time (every request has a client timeout, and the whole run waits at most ``duration_s
+ timeout_s``). Reports latency percentiles of served requests, deadline attainment, achieved quality (the
server's ``hf_ext.quality`` extension field; 0 for a refused or late request) and the count of each status.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

from ..common.config import ConfigMixin
from .arrivals import gamma_times


@dataclass
class LoadConfig(ConfigMixin):
    """One load run.

    Args:
        url: Server base URL (``http://127.0.0.1:8000``).
        rate: Mean requests per second.
        burstiness: Gamma shape of inter-arrival times (1 = Poisson).
        duration_s: Seconds over which requests are sent.
        max_requests: Bound on the number of requests.
        max_tokens: ``max_tokens`` of each request.
        prompts: Prompts, used in turn.
        tasks: Task ids sent in turn (None: the server's default).
        deadline_s: Deadline sent with each request (None: the server's default).
        timeout_s: Client timeout per request.
        seed: Seed of the arrival times.
        model: ``model`` field (None: routed by the server).
    """

    url: str = field(default="http://127.0.0.1:8000", metadata={"help": "server base URL"})
    rate: float = field(default=1.0, metadata={"help": "requests/s"})
    burstiness: float = field(default=1.0, metadata={"help": "gamma shape"})
    duration_s: float = field(default=30.0, metadata={"help": "seconds of sending"})
    max_requests: int = field(default=1000, metadata={"help": "bound on requests"})
    max_tokens: int = field(default=16, metadata={"help": "max_tokens per request"})
    prompts: list[str] = field(default_factory=lambda: ["The Python standard library"],
                               metadata={"help": "prompts used in turn"})
    tasks: list[str] | None = field(default=None, metadata={"help": "task ids used in turn"})
    deadline_s: float | None = field(default=None, metadata={"help": "deadline per request"})
    timeout_s: float = field(default=60.0, metadata={"help": "client timeout per request"})
    seed: int = field(default=0, metadata={"help": "seed of arrivals"})
    model: str | None = field(default=None, metadata={"help": "model field"})

    def __post_init__(self) -> None:
        for name in ("rate", "burstiness", "duration_s", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")
        if self.max_requests < 1 or self.max_tokens < 1:
            raise ValueError(f"max_requests and max_tokens must be >= 1, got {self.max_requests}, "
                             f"{self.max_tokens}.")
        if not self.prompts:
            raise ValueError("prompts must not be empty.")
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}.")


async def _one(client, cfg: LoadConfig, i: int, t0: float, at: float) -> dict:
    await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
    body = {"prompt": cfg.prompts[i % len(cfg.prompts)], "max_tokens": cfg.max_tokens, "temperature": 0.0}
    if cfg.model:
        body["model"] = cfg.model
    if cfg.tasks:
        body["task"] = cfg.tasks[i % len(cfg.tasks)]
    if cfg.deadline_s:
        body["deadline"] = cfg.deadline_s
    start = time.monotonic()
    try:
        r = await client.post(f"{cfg.url.rstrip('/')}/v1/completions", json=body, timeout=cfg.timeout_s)
    except Exception as e:  # noqa: BLE001  (every failure is a counted outcome)
        return {"status": f"client_{type(e).__name__}", "latency": time.monotonic() - start}
    out = {"status": str(r.status_code), "latency": time.monotonic() - start,
           "retry_after": r.headers.get("retry-after")}
    if r.status_code == 200:
        ext = r.json().get("hf_ext") or {}
        out.update(level=ext.get("level"), quality=ext.get("quality"), met=bool(ext.get("deadline_met")))
    return out


async def run_load_async(cfg: LoadConfig) -> dict:
    import httpx

    times = gamma_times(cfg.rate, cfg.burstiness, cfg.duration_s, np.random.default_rng(cfg.seed), cfg.max_requests)
    limits = httpx.Limits(max_connections=min(1024, len(times) + 1), max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits) as client:
        t0 = time.monotonic()
        tasks = [asyncio.create_task(_one(client, cfg, i, t0, float(t))) for i, t in enumerate(times)]
        done, pending = await asyncio.wait(tasks, timeout=cfg.duration_s + cfg.timeout_s + 5) if tasks else (set(),
                                                                                                            set())
        for t in pending:
            t.cancel()
        wall = time.monotonic() - t0
    results = [t.result() for t in tasks if t in done] + [{"status": "unfinished", "latency": None}] * len(pending)
    return summarize(results, wall, cfg)


def summarize(results: list[dict], wall_s: float, cfg: LoadConfig | None = None) -> dict:
    n = len(results)
    served = [r for r in results if r["status"] == "200"]
    lat = np.asarray([r["latency"] for r in served]) if served else np.zeros(0)
    pct = {f"p{q}_latency_s": (float(np.percentile(lat, q)) if len(lat) else None) for q in (50, 90, 99)}
    refused = [r for r in results if r["status"] in ("429", "503")]
    return {
        "requests": n, "wall_s": wall_s, "status_counts": dict(Counter(r["status"] for r in results)),
        **pct,
        "deadline_attainment": sum(r.get("met", False) for r in served) / n if n else None,
        "quality_mean_over_all": sum((r.get("quality") or 0.0) * r.get("met", False) for r in served) / n if n
        else None,
        "level_counts": dict(Counter(r.get("level") for r in served)),
        "refused_without_retry_after": sum(r.get("retry_after") is None for r in refused),
        "config": asdict(cfg) if cfg is not None else None,
    }


def run_load(cfg: LoadConfig) -> dict:
    """Run one bounded load against ``cfg.url``; returns the summary (see module docstring)."""
    return asyncio.run(run_load_async(cfg))
