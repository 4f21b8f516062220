"""The playground: the whole bot on this machine, with no Discord application.

Owns: the Discord stand-in (`bot.playground.double`, a loopback Discord that the real discord.py
logs into; the tests use the same copy) and what runs the bot against it.
May import: every part of the bot; nothing in the bot imports it.
"""
