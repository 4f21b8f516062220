"""The persistent buttons: every button class is registered, and each custom id finds its class.

A button class the client forgot to register would still be sent, and every click on it would be
dropped after the next restart; two templates matching one custom id would run two callbacks.
"""

from __future__ import annotations

import re

from bot.discord.buttons import KlingButton
from bot.discord.client import DYNAMIC_ITEMS

IDENT = "0123456789ab"


def button_classes(base: type[KlingButton] = KlingButton) -> set[type[KlingButton]]:
    found: set[type[KlingButton]] = set()
    for sub in base.__subclasses__():
        found |= {sub, *button_classes(sub)}
    return found


def test_every_button_class_is_registered_once() -> None:
    assert len(DYNAMIC_ITEMS) == len(set(DYNAMIC_ITEMS))
    assert set(DYNAMIC_ITEMS) == button_classes()


def test_each_custom_id_matches_only_its_own_class() -> None:
    for cls in DYNAMIC_ITEMS:
        custom_id = cls(IDENT).custom_id
        assert custom_id == f"kb:{cls.action}:{IDENT}"  # the ids on messages already posted
        matching = [
            other
            for other in DYNAMIC_ITEMS
            if other.__discord_ui_compiled_template__.fullmatch(custom_id)
        ]
        assert matching == [cls], custom_id


async def test_a_click_rebuilds_the_button_with_its_id() -> None:
    for cls in DYNAMIC_ITEMS:
        sent = cls(IDENT)
        match = re.fullmatch(cls.__discord_ui_compiled_template__, sent.custom_id)
        assert match is not None
        # from_custom_id reads only the match (discord.py passes the interaction and the item)
        rebuilt = await cls.from_custom_id(None, sent.item, match)  # type: ignore[arg-type]
        assert type(rebuilt) is cls and rebuilt.ident == IDENT


def test_ids_that_are_not_a_job_id_match_no_button() -> None:
    for custom_id in ("kb:cancel:0123", "kb:cancel:0123456789AB", "kb:unknown:0123456789ab"):
        assert not any(
            cls.__discord_ui_compiled_template__.fullmatch(custom_id) for cls in DYNAMIC_ITEMS
        ), custom_id
