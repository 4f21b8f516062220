"""The bot's aiohttp server: provider webhooks, /healthz and /readyz, /metrics, /media links.

Owns: HTTP routes and their limits. Every route calls the pipeline facade (bot.pipeline).
May import: bot.pipeline, storage (errors); never bot.discord or cogs.
"""
