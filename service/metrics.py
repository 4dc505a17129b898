"""Prometheus metrics, in a registry of their own per app (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "factpatch_http_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "factpatch_http_seconds", "HTTP latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.edits_enqueued = Counter("factpatch_edits_enqueued", "edits accepted", registry=r)
        self.jobs = Counter(
            "factpatch_jobs", "jobs finished by the worker", ["outcome"], registry=r
        )
        self.versions_committed = Counter("factpatch_versions_committed", "versions", registry=r)
        self.rollbacks = Counter("factpatch_rollbacks", "rollbacks", registry=r)
        self.tokens = Counter("factpatch_generated_tokens", "tokens generated", registry=r)
        self.current_version = Gauge("factpatch_current_version", "served version", registry=r)
        self.queue_length = Gauge("factpatch_queue_length", "jobs in the stream", registry=r)
        self.protected_prompts = Gauge(
            "factpatch_protected_prompts",
            "protected prompts the worker holds (the list's size at its last batch)",
            registry=r,
        )
        self.protected_changed = Gauge(
            "factpatch_protected_changed",
            "protected prompts whose answer the worker's last version changed",
            registry=r,
        )
