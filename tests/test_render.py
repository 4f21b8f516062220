"""Members' words in the bot's embeds are shown as typed: no masked links or formatting."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bot.discord.render import plain, prompt_text
from bot.request import VideoRequest

# A masked link as Discord renders it: [text](url) where the "[" is not escaped.
MASKED_LINK = re.compile(r"(?<!\\)(?:\\\\)*\[[^\]\n]*\]\(")


def test_a_masked_link_in_a_prompt_stays_visible_text() -> None:
    request = VideoRequest(prompt="[Claim free credits](https://example.com/x) now", duration_s=5)
    text = prompt_text(request)
    assert text.startswith("\\[Claim free credits\\]\\(")
    assert MASKED_LINK.search(text) is None


def test_headings_and_bold_are_escaped() -> None:
    assert plain("# Free\n**bold**") == "\\# Free\n\\*\\*bold\\*\\*"


@given(st.text(alphabet=st.sampled_from("[]()\\*_~`|>#- \nab:/."), max_size=80))
def test_no_text_becomes_a_masked_link(text: str) -> None:
    assert MASKED_LINK.search(plain(text)) is None


@given(st.text(max_size=200))
def test_escaping_only_adds_backslashes(text: str) -> None:
    assert plain(text).replace("\\", "") == text.replace("\\", "")
