"""A loopback Discord (REST + gateway) that the real discord.py logs into: the playground's
stand-in for Discord, and what the end-to-end tests drive.

Usage (the double runs in the test's event loop; the bot in-process or in a subprocess)::

    async with DiscordDouble(app_id=1, bot_user_id=2, token="test-token") as double:
        double.add_guild(10, name="g")
        double.add_channel(10, 20, "general")
        double.add_member(10, 30, "alice")
        with patch_discord_py(double):   # or pass double.api_base / gateway_url to a subprocess
            ...start the bot, then: await double.wait_until_connected()
            inter = await double.invoke("video", {"prompt": "a fox", "duration": 5})
            ack = await inter.wait_ack()             # raises InteractionFailed if rejected
            followup = await inter.wait_for_followup()
            msgs = double.messages(20)
            posted = double.post_as_member(20, "look", attachments=[("cat.png", png_bytes)])
            inter = await double.invoke_message_command("Animate", posted.id)

Attachments (options and members' messages) are served over loopback at signed links that expire
after 24 hours of the double's clock, as Discord's CDN links do; each counts its downloads.

``DiscordDouble(..., rate_limits=DISCORD_RATE_LIMITS)`` enforces Discord's per-route buckets
(messages: per channel) and its global limit (interaction responses exempt), answering 429 like
Discord; ``.faster(n)`` shortens every window and ``double.rate_limited()`` lists the 429s.

Things the test asks for that Discord would never send (unsynced command, invalid option,
unknown button) raise :class:`DoubleUsageError`. What the bot does wrong is answered the
way Discord answers it (JSON errors with Discord's codes) and recorded in ``requests`` and
``inter.responses``. Close the bot before stopping the double.
"""

from .builders import AttachmentInput
from .discordpy import patch_discord_py
from .double import DiscordDouble
from .faults import Fault
from .interactions import DoubleInteraction, InteractionFailed, ResponseRecord
from .model import (
    Attachment,
    Channel,
    Clock,
    DoubleUsageError,
    GatewayRecord,
    Guild,
    Member,
    Message,
    Overwrite,
    PartInfo,
    RecordedRequest,
    Role,
    User,
)
from .ratelimits import DISCORD_RATE_LIMITS, Limit, RateLimits, RouteLimit
from .wire import ApiError

__all__ = [
    "DISCORD_RATE_LIMITS",
    "ApiError",
    "Attachment",
    "AttachmentInput",
    "Channel",
    "Clock",
    "DiscordDouble",
    "DoubleInteraction",
    "DoubleUsageError",
    "Fault",
    "GatewayRecord",
    "Guild",
    "InteractionFailed",
    "Limit",
    "Member",
    "Message",
    "Overwrite",
    "PartInfo",
    "RateLimits",
    "RecordedRequest",
    "ResponseRecord",
    "Role",
    "RouteLimit",
    "User",
    "patch_discord_py",
]
