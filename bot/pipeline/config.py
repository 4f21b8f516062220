"""The pipeline's settings (from bot.settings, or set directly by tests) and its fixed limits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.pipeline.leases import default_process_id
from bot.settings import Settings

MAX_SUBMIT_ATTEMPTS = 5
FAILOVER_AFTER_TRANSIENT = 3  # failed creates in a row before a job tries the next provider
LATE_POLL_INTERVAL_S = 600.0
SWEEP_INTERVAL_S = 60.0
WEBHOOK_DELIVERY_KEEP_S = 7 * 24 * 3600  # then, if the job is finished, its delivery rows go
DEFAULT_RUN_MS = 240_000  # Kling v3 Pro typically takes 2-5 minutes
DEFAULT_MAX_CONCURRENT = 5
DEFAULT_CREATES_PER_MIN = 60
DEFAULT_POLLS_PER_MIN = 300


@dataclass(frozen=True)
class PipelineConfig:
    deadline_s: int = 3600
    late_grace_s: int = 6 * 3600
    poll_initial_s: float = 5.0
    poll_max_s: float = 60.0
    poll_concurrency: int = 16
    download_max_bytes: int = 500 * 1024 * 1024
    download_timeout_s: float = 600.0
    delivery_max_attempts: int = 5
    default_upload_limit_bytes: int = 10 * 1024 * 1024
    public_url: str | None = None
    max_concurrent: Mapping[str, int] = field(default_factory=dict)
    creates_per_min: Mapping[str, int] = field(default_factory=dict)
    polls_per_min: Mapping[str, int] = field(default_factory=dict)
    provider_chain: tuple[str, ...] = ()
    member_max_live: int = 2
    member_max_queued: int = 5
    member_cooldown_s: int = 0
    process_id: str = field(default_factory=default_process_id)
    lease_s: float = 30.0
    upload_timeout_s: float = 120.0

    def slots(self, provider: str) -> int:
        """How many jobs may be live at `provider` at once."""
        return self.max_concurrent.get(provider, DEFAULT_MAX_CONCURRENT)

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        names = settings.provider_chain
        groups = {name: settings.provider_settings(name) for name in names}
        return cls(
            deadline_s=settings.job_deadline_s,
            late_grace_s=settings.late_result_grace_s,
            poll_initial_s=settings.poll_initial_interval_s,
            poll_max_s=settings.poll_max_interval_s,
            poll_concurrency=settings.poll_concurrency,
            download_max_bytes=settings.download_max_mb * 1024 * 1024,
            download_timeout_s=settings.download_timeout_s,
            delivery_max_attempts=settings.delivery_max_attempts,
            default_upload_limit_bytes=settings.default_upload_limit_mb * 1024 * 1024,
            public_url=settings.public_url,
            max_concurrent={n: g.max_concurrent for n, g in groups.items()},
            creates_per_min={n: g.creates_per_min for n, g in groups.items()},
            polls_per_min={n: g.polls_per_min for n, g in groups.items()},
            provider_chain=tuple(names),
            member_max_live=settings.member_max_live_jobs,
            member_max_queued=settings.member_max_queued_jobs,
            member_cooldown_s=settings.member_cooldown_s,
            process_id=settings.process_id or default_process_id(),
            lease_s=settings.lease_s,
            upload_timeout_s=settings.upload_timeout_s,
        )
