"""klingbot: a self-hosted Discord bot for Kling v3 Pro videos paid from a moderated credit ledger.

Packages, each depending only on the ones below it (checked by import-linter, `make lint`):

    cogs/            slash commands, one extension per command family (not in this package)
    bot.discord      the Discord front end: client, command tree, rendering, delivery, status
    bot.runtime      builds the running system from settings; bot.web, the aiohttp server
    bot.pipeline     a job's life from request to delivered clip, with no Discord in it
    bot.providers    one adapter per video vendor behind one interface
    bot.media        probing, rendering and re-encoding clips (PyAV)
    storage/         every SQL statement: ledger, jobs, guild policy (not in this package)

Leaf modules any layer may use: bot.errors (the one error tree), bot.settings, bot.request (the
canonical video request), bot.pricing. Entry points: bot.cli (`klingbot ...`).
"""
