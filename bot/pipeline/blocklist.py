"""The prompt blocklist: moderators' words and regexes, matched so that no entry can stall the bot.

Words match whole words, in any case and with or without accents: the word and the prompt are both
compared in NFKD form with the marks removed and casefolded.

Regexes run on RE2 (google-re2), whose matching time is linear in the prompt whatever the pattern
(`(a+)+$` cannot backtrack for ever, as it would on the stdlib `re` on the event loop). A pattern
is compiled from the moderator's text untouched, case-insensitive, and tried on each text of the
request as written and with its accents removed (NFKD, marks dropped: "GÖRE" is also "GORE").
RE2 has no backreferences, lookaround or possessive quantifiers, and its `\\b \\w \\d \\s` know
ASCII only; `check_regex` says why a pattern cannot be used when a moderator adds it.
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Protocol, cast

import re2

from storage import BlockedPattern

log = logging.getLogger(__name__)

MAX_PATTERN_CHARS = 200
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)  # an escape and the character it escapes
_ASCII_WORD_ESCAPES = frozenset("bBwW")  # RE2: ASCII word characters only
_BACKREFERENCE = re.compile(r"invalid escape sequence: \\[1-9]|invalid perl operator: \(\?P$")
_LOOKAROUND = re.compile(r"invalid perl operator: \(\?(?:=|!|<=|<!)")
_POSSESSIVE = re.compile(r"invalid perl operator: \(\?>|bad repetition operator: .*\+$")


class _Regex(Protocol):
    def search(self, text: str) -> object | None: ...


def normalize(text: str) -> str:
    """Case- and accent-insensitive form: NFKD, marks removed, casefolded."""
    return strip_accents(text).casefold()


def strip_accents(text: str) -> str:
    """NFKD with the combining marks removed ("Gödel" -> "Godel", "ｆｕｌｌ" -> "full")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _utf8(text: str) -> str:
    """`text` with lone surrogates replaced (RE2 takes UTF-8, which cannot carry them)."""
    return text.encode("utf-8", "replace").decode("utf-8")


@functools.lru_cache(maxsize=1024)
def compile_word(word: str) -> re.Pattern[str] | None:
    """A word entry as a stdlib regex over normalized text (an escaped literal: no backtracking)."""
    folded = normalize(word).strip()
    if not folded:
        return None  # nothing left to look for (only marks or spaces)
    return re.compile(rf"(?<!\w){re.escape(folded)}(?!\w)")


@functools.lru_cache(maxsize=1024)
def compile_regex(pattern: str) -> _Regex:
    """A regex entry on RE2, case-insensitive; raises re2.error if RE2 cannot compile it."""
    options = re2.Options()
    options.case_sensitive = False
    options.never_capture = True
    options.log_errors = False
    return cast(_Regex, re2.compile(pattern, options))


def check_regex(pattern: str) -> str | None:
    """Why `pattern` can't be a blocklist regex (None when it can): said when a moderator adds it."""
    if len(pattern) > MAX_PATTERN_CHARS:
        return f"Keep blocklist patterns under {MAX_PATTERN_CHARS} characters."
    if _utf8(pattern) != pattern:
        return "That pattern contains characters that are not valid text."
    try:
        compiled = compile_regex(pattern)
    except re2.error as error:
        return _refusal(_message(error))
    escapes = {m.group(1) for m in _ESCAPE.finditer(pattern)}
    if escapes & _ASCII_WORD_ESCAPES and any(not c.isascii() and c.isalnum() for c in pattern):
        return (
            "In a blocklist regex, \\b and \\w only know the letters a-z and digits, so next to a"
            " letter like é or я they never match. Leave the accents out (prompts are also checked"
            " with accents removed), or use \\pL for any letter."
        )
    if compiled.search("") is not None:
        return "That pattern matches an empty prompt, so it would refuse every request."
    return None


def _message(error: Exception) -> str:
    first = error.args[0] if error.args else ""
    return first.decode("utf-8", "replace") if isinstance(first, bytes) else str(first)


def _refusal(message: str) -> str:
    """The moderator-facing reason for an RE2 compile error."""
    if _BACKREFERENCE.search(message):
        return "Blocklist regexes cannot use backreferences (\\1, (?P=name))."
    if _LOOKAROUND.search(message):
        return (
            "Blocklist regexes cannot use lookahead or lookbehind"
            " ((?=...), (?!...), (?<=...), (?<!...))."
        )
    if _POSSESSIVE.search(message):
        return (
            "Blocklist regexes cannot use atomic groups or possessive quantifiers"
            " ((?>...), a++); the plain forms are just as fast here."
        )
    if message.startswith("invalid escape sequence: \\Z"):
        return "Blocklist regexes write the end of the text as \\z (or $), not \\Z."
    return f"That is not a regular expression the blocklist can use: {message}."


def first_blocked(entries: Iterable[BlockedPattern], texts: Sequence[str]) -> str | None:
    """The first entry found in any of `texts` (the prompts of one request), or None."""
    texts = [_utf8(t) for t in texts]
    folded = "\n".join(normalize(t) for t in texts)
    variants = [v for t in texts for v in dict.fromkeys((t, strip_accents(t)))]
    for entry in entries:
        if entry.is_regex:
            regex = _usable_regex(entry.pattern)
            if regex is not None and any(regex.search(v) is not None for v in variants):
                return entry.pattern
        else:
            word = compile_word(entry.pattern)
            if word is not None and word.search(folded) is not None:
                return entry.pattern
    return None


@functools.lru_cache(maxsize=1024)
def _usable_regex(pattern: str) -> _Regex | None:
    """The compiled entry, or None (logged once) for one saved before RE2 could refuse it."""
    try:
        return compile_regex(pattern)
    except (re2.error, UnicodeError) as error:
        log.warning("blocklist regex %r is not used: RE2 cannot run it (%s)", pattern, error)
        return None
