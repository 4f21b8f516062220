"""Sending a job's create to its provider: the request, its images read from disk again, the
webhook URL (when the bot has a public address) and the bot's own job id as the client
reference (so a vendor that takes one can tell us later what a lost create made). Used by the
dispatcher for a first create and by recovery to resend one whose answer was lost."""

from __future__ import annotations

import asyncio

from bot.pipeline.config import PipelineConfig
from bot.pipeline.media_store import MediaStore
from bot.providers import Submission, VideoProvider
from bot.request import VideoRequest
from storage import Job


class Creates:
    def __init__(self, *, media: MediaStore, config: PipelineConfig) -> None:
        self._media = media
        self._config = config

    def webhook_url(self, provider: VideoProvider, job: Job) -> str | None:
        if not self._config.public_url or provider.capabilities.webhooks == "none":
            return None
        return f"{self._config.public_url}/webhooks/{job.provider}/{job.webhook_token}"

    async def send(self, provider: VideoProvider, job: Job) -> Submission:
        """Create `job` at `provider`. Raises ProviderError (a missing image: invalid input)."""
        request = VideoRequest.model_validate(job.request)
        images = None
        if request.image is not None:  # read from disk again for every attempt
            images = await asyncio.to_thread(self._media.load_images, job, request)
        return await provider.submit(
            request, webhook_url=self.webhook_url(provider, job), images=images, client_ref=job.id
        )
