"""The worker's Prometheus metrics; every label value comes from a fixed set (stream names, outcome words)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

OUTCOMES = ("ok", "failed", "poisoned", "duplicate", "skipped")


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.processed = Counter(
            "switchboard_worker_requests", "Queued requests finished by this worker: ok (2xx stored in the output), "
            "failed (a final error stored), poisoned (given up after max_attempts), duplicate (another result was "
            "there first), skipped (batch cancelled or gone)", ["stream", "outcome"], registry=r)
        self.retries = Counter(
            "switchboard_worker_retries", "Sends tried again: a failed attempt (server_error, timeout, connection) "
            "or back-pressure waited out (yielding, rate_limited)", ["stream", "reason"], registry=r)
        self.claimed = Counter("switchboard_worker_claimed", "Entries taken over from a worker that held them past "
                               "the visibility timeout", ["stream"], registry=r)
        self.in_flight = Gauge("switchboard_worker_in_flight", "Queued requests this worker holds", registry=r)
        self.redis_errors = Counter("switchboard_worker_redis_errors", "Redis calls that failed (retried)",
                                    registry=r)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
