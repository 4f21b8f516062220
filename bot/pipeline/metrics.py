"""Prometheus metrics, in a registry of our own (no global state)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.providers import ADAPTERS
from storage import JobState, JobStore, Ledger

OTHER_PROVIDER = "other"  # the label of a webhook URL naming no provider klingbot knows


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge("klingbot_jobs", "Jobs by state.", ["state"], registry=self.registry)
        self.provider_seconds = Histogram(
            "klingbot_provider_request_seconds",
            "Latency of provider API calls.",
            ["provider", "operation"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "klingbot_provider_errors_total",
            "Provider call failures by error kind.",
            ["provider", "kind"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "klingbot_webhooks_total",
            "Webhook deliveries by provider and result.",
            ["provider", "result"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "klingbot_deliveries_total", "Clips delivered, by how.", ["via"], registry=self.registry
        )
        self.credits_held = Gauge(
            "klingbot_credits_held", "Credits held by open holds.", registry=self.registry
        )
        self.credits_captured = Gauge(
            "klingbot_credits_captured",
            "Credits captured (spent) in total.",
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "klingbot_job_seconds",
            "Time from submission to the provider's result.",
            ["provider"],
            buckets=(30, 60, 120, 180, 240, 300, 450, 600, 900, 1800, 3600),
            registry=self.registry,
        )

    async def refresh(self, jobs: JobStore, ledger: Ledger) -> None:
        """Read gauges from the database (done at scrape time)."""
        counts = await jobs.count_by_state()
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state, 0))
        totals = await ledger.totals()
        self.credits_held.set(totals.held)
        self.credits_captured.set(totals.spent)

    def webhook(self, provider: str, result: str) -> None:
        """Count one webhook. Label values come only from known names: a URL's provider segment
        that names no adapter counts as "other", so junk requests cannot add series."""
        label = provider if provider in ADAPTERS else OTHER_PROVIDER
        self.webhooks.labels(label, result).inc()

    def observe_call(
        self, provider: str, operation: str, started: float, error: Exception | None = None
    ) -> None:
        """Record one provider call that began at `started` (time.perf_counter())."""
        self.provider_seconds.labels(provider, operation).observe(time.perf_counter() - started)
        kind = getattr(error, "kind", None)
        if kind is not None:
            self.provider_errors.labels(provider, str(kind)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
