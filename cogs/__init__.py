"""Extensions: one module per family of slash commands (generate, credits, jobs, pool, admin),
loaded by name by bot/discord/client.py (`EXTENSIONS`). A cog parses options, checks and replies;
the work is done by bot.discord (requests, buttons, rendering) and the pipeline.

May import: discord, bot.discord, bot.pipeline (from the package), bot.errors, storage (types).
Never imported by anything; never reads settings (bot.discord.client.FrontConfig carries them).
"""
