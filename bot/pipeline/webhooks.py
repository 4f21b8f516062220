"""The webhook inbox: a provider's callback is verified, recorded once, and turned into a hint.

A webhook never changes a job by itself: it makes the tracker poll the provider's status endpoint
(the truth) sooner. Unknown job or provider -> 404; bad signature -> 401; unreadable -> 400; a
repeated delivery -> 200 "duplicate" with nothing done; a callback that names the vendor's job id
of a job whose create got no answer adopts that id. The hint goes to the process that works on the
job (bot.pipeline.leases): this one if it holds the job's lease or can take it, else its owner.
A remembered webhook target that would refuse the callback is read again first: another process
may have moved the job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bot.pipeline.leases import LeaseKeeper
from bot.pipeline.metrics import Metrics
from bot.pipeline.tasks import BackgroundTasks
from bot.pipeline.vendors import Vendors
from bot.providers import WebhookRefused
from storage import JobStore

log = logging.getLogger(__name__)


class WebhookInbox:
    def __init__(
        self,
        *,
        jobs: JobStore,
        vendors: Vendors,
        leases: LeaseKeeper,
        metrics: Metrics,
        tasks: BackgroundTasks,
    ) -> None:
        self._jobs = jobs
        self._vendors = vendors
        self._leases = leases
        self._metrics = metrics
        self._tasks = tasks

    async def receive(
        self, provider_name: str, token: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str]:
        """Verify and record a webhook; return (HTTP status, short reason). Work happens later."""
        provider = self._vendors.get(provider_name)
        job = await self._jobs.webhook_target(token) if provider else None
        if job is not None and job.provider != provider_name:
            job = await self._jobs.webhook_target(token, fresh=True)  # moved by another process?
        if provider is None or job is None or job.provider != provider_name:
            self._metrics.webhook(provider_name, "unknown_job")
            return 404, "unknown job"
        try:
            event = provider.parse_webhook(headers, body)
        except WebhookRefused as error:
            result = "forged" if error.http_status == 401 else "malformed"
            self._metrics.webhooks.labels(provider_name, result).inc()
            log.warning("webhook for job %s refused (%s): %s", job.job_id, result, error.detail)
            return error.http_status, error.detail
        if event.provider_job_id and event.provider_job_id != job.provider_job_id:
            job = await self._jobs.webhook_target(token, fresh=True) or job  # adopted elsewhere?
        if (
            event.provider_job_id
            and job.provider_job_id
            and event.provider_job_id != job.provider_job_id
        ):
            self._metrics.webhooks.labels(provider_name, "mismatch").inc()
            return 400, "webhook is for another provider job"
        state = event.status.state.value if event.status else "hint"
        key = event.delivery_id or f"{job.job_id}:{state}"
        if not await self._jobs.record_webhook(provider_name, key, job.job_id):
            self._metrics.webhooks.labels(provider_name, "duplicate").inc()
            return 200, "duplicate"
        self._metrics.webhooks.labels(provider_name, "accepted").inc()
        if event.provider_job_id and not job.provider_job_id:
            self._tasks.spawn(self._adopt(job.job_id, event.provider_job_id), f"adopt-{job.job_id}")
        else:
            await self._leases.route(job.job_id)
        return 200, "ok"

    async def _adopt(self, job_id: str, provider_job_id: str) -> None:
        """A webhook told us the id of a job whose create got no answer: track it now."""
        await self._jobs.adopt(job_id, provider_job_id)
        await self._leases.route(job_id)
