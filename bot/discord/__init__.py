"""The Discord front end: everything that speaks discord.py except the slash commands themselves,
which are extensions in cogs/.

Owns: the client (`client.KlingBot`: loads the extensions, registers the persistent buttons,
plugs the front end into the pipeline), the command tree with the one translation from an error
to the member's text (`tree`), run-time permission checks (`checks`), the moderation log channel
(`modlog`), pure job-to-embed rendering (`render`), forms (`modals`), the persistent buttons
(`buttons`, `video_requests`), asking for a video from an interaction (`video_requests`), and
for an animation of an attached image, read and checked at command time (`animate`),
delivering clips and keeping status messages current with the bot token (`delivery`, `status`),
pacing every post and edit under Discord's rate limits (`rate_limits`, `pacing`),
acknowledgements before work (`ack_first`) and `klingbot run|sync|invite-url` (`cli`).

May import: discord, bot.pipeline (from the package, never its modules), bot.media (the errors
`fit_clip` raises, the image checks), bot.request, bot.errors, bot.settings, storage; bot.runtime only in `cli`,
the entry point that builds the runtime (elsewhere only under TYPE_CHECKING).
Never imports: cogs (the client loads them by name), bot.providers, bot.web.

Inside, a module imports only modules before it in: ack_first, rate_limits, pacing, render,
checks, tree, modlog, modals, buttons, video_requests, animate, status, delivery, client, cli. The
others reach `KlingBot` only under TYPE_CHECKING.
"""
