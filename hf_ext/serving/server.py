"""The best-effort server: FastAPI app factory, one batching worker per level, the router, admission and metrics.

A request is routed by the router (or the threshold heuristic without one); if the chosen level's estimated
completion misses the request's deadline or its queue is full, the next lower-quality level that meets it serves
instead; only when even the fastest level cannot, the server answers 429 with ``Retry-After`` (503 when the levels
are down). ``model`` may name a level to pin it (unknown names: 404). Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from transformers.utils import logging

from ..common.config import ConfigMixin
from .levels import BackendUnavailable, Level
from .policies import EwmaRate, RouterState, ThresholdPolicy, estimate_completion
from .profile import LevelProfile, ServingProfile
from .protocol import APIError

logger = logging.get_logger(__name__)


@dataclass
class ServerConfig(ConfigMixin):
    """Server limits and defaults (our choices, documented).

    Args:
        host: Interface to bind (127.0.0.1: loopback only).
        port: TCP port.
        served_model_name: Name answered in ``model`` and by ``/v1/models`` (a level's name pins that level).
        max_batch: Largest batch a level serves.
        queue_bound: Longest queue per level; beyond it the level takes no more requests.
        max_request_bytes: Larger request bodies get 413.
        max_prompt_tokens: Longer prompts get 413.
        max_tokens_limit: Largest ``max_tokens`` accepted (400 above).
        default_deadline_s: Deadline of a request that names none.
        default_task: Task of a request that names none (None: the profile's first task).
        rate_halflife: Half-life of the EWMA arrival rate, in requests.
        down_retry_s: Seconds a level that failed is skipped (and the ``Retry-After`` of a 503).
    """

    host: str = field(default="127.0.0.1", metadata={"help": "bind address"})
    port: int = field(default=8000, metadata={"help": "port"})
    served_model_name: str = field(default="hf-ext-best-effort", metadata={"help": "served model name"})
    max_batch: int = field(default=8, metadata={"help": "largest batch per level"})
    queue_bound: int = field(default=64, metadata={"help": "longest queue per level"})
    max_request_bytes: int = field(default=1 << 20, metadata={"help": "413 above this body size"})
    max_prompt_tokens: int = field(default=2048, metadata={"help": "413 above this prompt length"})
    max_tokens_limit: int = field(default=512, metadata={"help": "largest max_tokens"})
    default_deadline_s: float = field(default=10.0, metadata={"help": "deadline when none is given"})
    default_task: str | None = field(default=None, metadata={"help": "task when none is given"})
    rate_halflife: float = field(default=8.0, metadata={"help": "EWMA half-life, requests"})
    down_retry_s: float = field(default=5.0, metadata={"help": "seconds a failed level is skipped"})

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_bound", "max_request_bytes", "max_prompt_tokens", "max_tokens_limit"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got {self.port}.")
        for name in ("default_deadline_s", "rate_halflife", "down_retry_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}.")


@dataclass
class Pending:
    prompt: str
    max_tokens: int
    temperature: float
    arrival: float
    on_text: object = None
    future: asyncio.Future | None = None
    task: int = 0
    deadline: float = 10.0
    pinned: bool = False


class LevelWorker:
    """A level's bounded FIFO queue and the loop that serves it in batches; keeps a measured-to-profiled service
    time ratio so admission estimates follow the machine as it is now."""

    def __init__(self, level: Level, profile: LevelProfile, max_batch: int, queue_bound: int):
        self.level, self.profile, self.max_batch, self.queue_bound = level, profile, max_batch, queue_bound
        self.queue: deque[Pending] = deque()
        self.running, self.busy_until, self.scale, self.down_until = 0, 0.0, 1.0, 0.0
        self.wake = asyncio.Event()
        self.batches = 0

    def service_time(self, batch: int) -> float:
        return self.scale * self.profile.service_time(batch)

    def estimate(self, now: float) -> float:
        busy = self.busy_until if self.running else now
        return estimate_completion(now, busy, len(self.queue), self.max_batch, self.service_time)

    def submit(self, item: Pending) -> None:
        self.queue.append(item)
        self.wake.set()

    async def run(self, on_batch) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(self.max_batch, len(self.queue)))]
                self.running = len(batch)
                start = time.monotonic()
                self.busy_until = start + self.service_time(len(batch))
                try:
                    gens = await self.level.generate([p.prompt for p in batch], [p.max_tokens for p in batch],
                                                     batch[0].temperature, [p.on_text for p in batch])
                    took = time.monotonic() - start
                    self.scale = 0.8 * self.scale + 0.2 * took / self.profile.service_time(len(batch))
                    for p, g in zip(batch, gens):
                        p.future.done() or p.future.set_result(g)
                except Exception as e:  # a failed batch fails its requests, never the worker
                    if isinstance(e, BackendUnavailable):
                        self.down_until = time.monotonic() + on_batch.config.down_retry_s
                    for p in batch:
                        if not p.future.done() and not (isinstance(e, BackendUnavailable) and on_batch.reroute(p)):
                            p.future.set_exception(e)
                finally:
                    self.running, self.batches = 0, self.batches + 1
                on_batch.record_batch(self, len(batch), time.monotonic() - start)


def unprofiled(levels: list[Level], tasks: list[str]) -> ServingProfile:
    """A placeholder profile when none was measured: levels ranked by their order (lowest quality first), one
    second per batch until the workers' measurements correct it. Measure a real one with ``hf-ext serve profile``."""
    n = len(levels)
    return ServingProfile(levels=[LevelProfile(lv.name, [1], [1.0], quality={t: (i + 1) / n for t in tasks})
                                  for i, lv in enumerate(levels)], tasks=tasks, meta={"unprofiled": True})


class BestEffortServer:
    """Levels + profile + policy + limits; :func:`build_app` serves it over HTTP."""

    def __init__(self, levels: list[Level], profile: ServingProfile | None = None, router=None,
                 config: ServerConfig | None = None):
        from .metrics import ServerMetrics

        if not levels:
            raise ValueError("A server needs at least one level.")
        self.levels, self.config = levels, config or ServerConfig()
        self.profile = profile or unprofiled(levels, [self.config.default_task or "default"])
        if self.profile.names != [lv.name for lv in levels]:
            raise ValueError(f"The profile's levels {self.profile.names} are not the server's "
                             f"{[lv.name for lv in levels]} (same names, same order).")
        if router is not None and (router.levels != self.profile.names or router.tasks != self.profile.tasks):
            raise ValueError(f"The router was trained for levels {router.levels} and tasks {router.tasks}, not "
                             f"{self.profile.names} and {self.profile.tasks}.")
        cfg = self.config
        self.default_task = cfg.default_task or self.profile.tasks[0]
        if self.default_task not in self.profile.tasks:
            raise ValueError(f"default_task {self.default_task!r} is not a profiled task {self.profile.tasks}.")
        self.policy = router or ThresholdPolicy(
            [[self.profile.quality(lv, t) for t in range(len(self.profile.tasks))] for lv in range(len(levels))],
            [self.profile.capacity(lv, cfg.max_batch) for lv in range(len(levels))], cfg.max_batch)
        self.workers: list[LevelWorker] = []
        self.rate = EwmaRate(cfg.rate_halflife)
        self.metrics = ServerMetrics([lv.name for lv in levels])
        self.tasks: list[asyncio.Task] = []
        self.chat_tokenizer = next((lv.tokenizer for lv in levels if getattr(lv.tokenizer, "chat_template", None)),
                                   None)

    # ----------------------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        cfg = self.config
        self.workers = [LevelWorker(lv, lp, cfg.max_batch, cfg.queue_bound)
                        for lv, lp in zip(self.levels, self.profile.levels)]
        self.tasks = [asyncio.create_task(w.run(self)) for w in self.workers]

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for w in self.workers:
            for p in w.queue:
                p.future.done() or p.future.set_exception(APIError(503, "server shutting down", "server_error"))
        for lv in self.levels:
            await lv.aclose()

    def record_batch(self, worker: LevelWorker, size: int, seconds: float) -> None:
        self.metrics.batch(worker.level.name, size, seconds)

    # ----------------------------------------------------------------------------------------------- admission
    def task_index(self, task: str | None) -> int:
        task = task or self.default_task
        if task not in self.profile.tasks:
            raise APIError(400, f"Unknown task {task!r}; this server knows {self.profile.tasks}.", param="task",
                           code="unknown_task")
        return self.profile.tasks.index(task)

    def level_index(self, model: str | None) -> int | None:
        if model in (None, "", self.config.served_model_name, "default"):
            return None
        names = [lv.name for lv in self.levels]
        if model not in names:
            raise APIError(404, f"The model {model!r} does not exist; serve {self.config.served_model_name!r} or a "
                           f"level {names}.", param="model", code="model_not_found")
        return names.index(model)

    def route(self, task: int, deadline: float, pinned: int | None, count: bool = True) -> int:
        """The serving level, or an APIError (429 / 503 with Retry-After)."""
        now = time.monotonic()
        if count:
            self.metrics.rate.set(self.rate.update(now))
        ws = self.workers
        up = [i for i, w in enumerate(ws) if w.down_until <= now]
        if pinned is not None:
            if pinned not in up:
                raise APIError(503, f"Level {self.levels[pinned].name!r} is unavailable.", "server_error",
                               code="backend_unavailable", headers={"Retry-After": str(int(self.config.down_retry_s))})
            if len(ws[pinned].queue) >= self.config.queue_bound:
                raise self._overloaded([pinned], now)
            return pinned
        if not up:
            raise APIError(503, "Every level is unavailable.", "server_error", code="backend_unavailable",
                           headers={"Retry-After": str(int(self.config.down_retry_s))})
        state = RouterState(task=task, queue_lengths=[len(w.queue) for w in ws], running=[w.running for w in ws],
                            rate=self.rate.rate)
        choice = int(self.policy.choose(state))
        by_quality = sorted(up, key=lambda i: -self.profile.quality(i, task))
        candidates = [choice] + [i for i in by_quality if self.profile.quality(i, task) <= self.profile.quality(
            choice, task) and i != choice] if choice in up else by_quality
        for i in candidates:
            if len(ws[i].queue) < self.config.queue_bound and ws[i].estimate(now) - now <= deadline:
                return i
        raise self._overloaded(up, now)

    def reroute(self, p: Pending) -> bool:
        """Give a routed (not pinned) request of a level that just failed to another level; False if none can."""
        if p.pinned:
            return False
        left = p.deadline - (time.monotonic() - p.arrival)
        try:
            level = self.route(p.task, left, None, count=False)
        except APIError:
            return False
        self.workers[level].submit(p)
        p.future.level = level
        return True

    def _overloaded(self, levels: list[int], now: float) -> APIError:
        wait = min(self.workers[i].estimate(now) - now for i in levels)
        return APIError(429, "Overloaded: no level can meet the deadline; retry later.", "overloaded",
                        code="overloaded", headers={"Retry-After": str(max(1, math.ceil(wait)))})

    async def submit(self, prompt: str, max_tokens: int, temperature: float, task: int, deadline: float,
                     pinned: int | None, on_text=None) -> tuple[int, asyncio.Future, float]:
        level = self.route(task, deadline, pinned)
        arrival = time.monotonic()
        fut = asyncio.get_running_loop().create_future()
        fut.level = level  # updated if the request is rerouted
        self.workers[level].submit(Pending(prompt, max_tokens, temperature, arrival, on_text, fut, task, deadline,
                                           pinned is not None))
        self.metrics.queue(self.levels[level].name, len(self.workers[level].queue))
        return level, fut, arrival

    def health(self) -> dict:
        now = time.monotonic()
        return {"status": "ok", "levels": [
            {"name": w.level.name, "queue": len(w.queue), "running": w.running, "up": w.down_until <= now,
             "service_scale": round(w.scale, 3)} for w in self.workers], "arrival_rate": self.rate.rate,
            "router": getattr(self.policy, "name", type(self.policy).__name__),
            "profiled": not self.profile.meta.get("unprofiled", False)}


def build_app(server: BestEffortServer):
    """The FastAPI app (routes in :mod:`hf_ext.serving.api`), starting and stopping the workers in its lifespan."""
    from fastapi import FastAPI

    from .api import attach_routes

    @asynccontextmanager
    async def lifespan(app):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="hf-ext best-effort server", lifespan=lifespan)
    attach_routes(app, server)
    return app


def serve(server: BestEffortServer, log_level: str = "warning") -> None:
    """Run the app with uvicorn on ``server.config.host:port`` (blocking)."""
    import uvicorn

    cfg = server.config
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("Binding %s: the server is reachable from other machines.", cfg.host)
    uvicorn.run(build_app(server), host=cfg.host, port=cfg.port, log_level=log_level)


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))
