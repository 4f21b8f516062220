"""The job pipeline (DESIGN.md sections 5 and 6): everything between "a member asked" and "the
clip is in the channel", with no Discord in it. It takes plain ids (guild, channel, user,
interaction), so the Discord front end, the CLI, the playground and the tests all drive it alike.

Owns: the job's life (intake, approvals, dispatch, tracking, settlement, completion, sweeping),
the delivery sink interface, the media directory, metrics and the moderators' credit actions.
May import: bot.providers, bot.media, bot.request, bot.pricing, bot.settings, bot.errors, storage.
Never imports: discord, bot.discord, cogs, bot.web.
"""

from bot.pipeline.blocklist import check_regex
from bot.pipeline.config import WEBHOOK_DELIVERY_KEEP_S, PipelineConfig
from bot.pipeline.delivery import (
    Delivered,
    DeliveryError,
    DeliverySink,
    Fence,
    FileSink,
    fit_clip,
)
from bot.pipeline.events import EventBus, JobEvent, JobObserver
from bot.pipeline.facade import Pipeline
from bot.pipeline.media_store import MediaStore
from bot.pipeline.metrics import Metrics
from bot.pipeline.models import Actor, ProviderIncident, Quote, Receipt, Requester
from bot.pipeline.moderation import Moderation, PoolStatus, Report
from bot.pipeline.policy import DAY_MS, day_start_ms
from bot.pipeline.rates import CreateRate

__all__ = [
    "DAY_MS",
    "WEBHOOK_DELIVERY_KEEP_S",
    "Actor",
    "CreateRate",
    "Delivered",
    "DeliveryError",
    "DeliverySink",
    "EventBus",
    "Fence",
    "FileSink",
    "JobEvent",
    "JobObserver",
    "MediaStore",
    "Metrics",
    "Moderation",
    "Pipeline",
    "PipelineConfig",
    "PoolStatus",
    "ProviderIncident",
    "Quote",
    "Receipt",
    "Report",
    "Requester",
    "check_regex",
    "day_start_ms",
    "fit_clip",
]
