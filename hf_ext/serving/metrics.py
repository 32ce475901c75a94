"""Prometheus metrics of the server (``/metrics``), named after vLLM's where they mean the same thing."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class ServerMetrics:
    """One registry per server (two servers in one process never share counters)."""

    def __init__(self, levels: list[str]):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("hf_ext_requests", "Requests by level and outcome", ["level", "status"], registry=r)
        self.deadline_met = Counter("hf_ext_deadline_met", "Served requests that met their deadline", ["level"],
                                    registry=r)
        self.latency = Histogram("hf_ext_e2e_request_latency_seconds", "Arrival to last token", ["level"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram("hf_ext_batch_service_seconds", "Service time of one batch", ["level"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("hf_ext_batch_size", "Requests per batch", ["level"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=r)
        self.waiting = Gauge("hf_ext_num_requests_waiting", "Queued requests", ["level"], registry=r)
        self.rate = Gauge("hf_ext_arrival_rate", "EWMA arrival rate (requests/s)", registry=r)
        self.prompt_tokens = Counter("hf_ext_prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("hf_ext_generation_tokens", "Generated tokens", registry=r)
        for name in levels:
            self.waiting.labels(name).set(0)

    def queue(self, level: str, n: int) -> None:
        self.waiting.labels(level).set(n)

    def batch(self, level: str, size: int, seconds: float) -> None:
        self.batch_size.labels(level).observe(size)
        self.batch_seconds.labels(level).observe(seconds)

    def done(self, level: str, status: str, latency: float | None = None, met: bool = False, prompt: int = 0,
             generated: int = 0) -> None:
        self.requests.labels(level, status).inc()
        if latency is not None:
            self.latency.labels(level).observe(latency)
        if met:
            self.deadline_met.labels(level).inc()
        self.prompt_tokens.inc(prompt)
        self.generation_tokens.inc(generated)

    def render(self) -> bytes:
        return generate_latest(self.registry)
