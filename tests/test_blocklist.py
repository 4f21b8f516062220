"""The prompt blocklist: whole words in any case and accent, regexes on RE2 with their escapes
intact, refused at add time when RE2 cannot run them, and linear-time on adversarial input."""

from __future__ import annotations

import logging
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.pipeline.blocklist import check_regex, first_blocked, normalize
from storage import BlockedPattern

MARKS = "\u0300\u0301\u0302\u0303\u0308\u030a\u0327"  # grave, acute, circumflex, tilde, ...
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORD_LETTERS = LETTERS + "ßøæабвгдежзийклмнопрстуфхцчшщъыьэюяαβγδεζηθςσω"
ascii_word = st.text(alphabet=LETTERS, min_size=1, max_size=12)
word_text = st.text(alphabet=WORD_LETTERS, min_size=1, max_size=12)
neighbours = st.text(alphabet=WORD_LETTERS + "éÖ0_9", max_size=4)
separators = st.text(alphabet=" \t\n,.;:!?()'\"-", min_size=1, max_size=3)


def word(pattern: str) -> list[BlockedPattern]:
    return [BlockedPattern(pattern, False)]


def regex(pattern: str) -> list[BlockedPattern]:
    return [BlockedPattern(pattern, True)]


def blocks(entries: list[BlockedPattern], prompt: str) -> bool:
    return first_blocked(entries, [prompt]) is not None


@st.composite
def disguised(draw: st.DrawFn, text: str) -> str:
    """`text` with each letter's case flipped at random and accents added at random."""
    out = []
    for char in text:
        char = char.upper() if draw(st.booleans()) else char
        if draw(st.booleans()):
            char = unicodedata.normalize(
                draw(st.sampled_from(["NFC", "NFD"])), char + draw(st.sampled_from(MARKS))
            )
        out.append(char)
    return "".join(out)


# -- words -------------------------------------------------------------------------------------


@given(entry=word_text, left=neighbours, right=neighbours)
def test_a_word_never_matches_inside_another_word(entry: str, left: str, right: str) -> None:
    inside = left + entry + right
    blocked = normalize(inside) == normalize(entry)  # "ß" is "ss", "é" is "e": the same word
    assert blocks(word(entry), f"({inside}) {inside}!") is blocked


@given(data=st.data(), entry=word_text, before=separators, after=separators)
def test_case_and_accents_never_matter_for_words(
    data: st.DataObject, entry: str, before: str, after: str
) -> None:
    prompt = "x" + before + data.draw(disguised(entry)) + after + "y"
    assert blocks(word(entry), prompt)
    assert blocks(word(data.draw(disguised(entry))), "x" + before + entry + after + "y")


@pytest.mark.parametrize(
    ("entry", "prompt", "blocked"),
    [
        ("gore", "a GÖRE scene", True),
        ("gore", "Gore everywhere", True),
        ("gore", "gorefree meadow", False),
        ("gore", "ｇｏｒｅ in fullwidth", True),  # NFKD folds compatibility forms
        ("strasse", "an empty STRAßE", True),  # casefold: ß is ss
        ("f*ck", "what the F*CK", True),  # punctuation in a word is literal
        ("f*ck", "what the fck", False),
        ("\u0301", "a b  c", False),  # nothing left to look for after normalizing
    ],
)
def test_word_examples(entry: str, prompt: str, blocked: bool) -> None:
    assert blocks(word(entry), prompt) is blocked


# -- regexes -----------------------------------------------------------------------------------


@given(data=st.data(), entry=ascii_word, before=separators, after=separators)
def test_case_and_accents_in_the_prompt_never_evade_a_regex(
    data: st.DataObject, entry: str, before: str, after: str
) -> None:
    prompt = "x" + before + data.draw(disguised(entry)) + after + "y"
    assert blocks(regex(rf"\b{entry}\b"), prompt)
    assert blocks(regex(f"{entry.upper()}"), prompt)


@pytest.mark.parametrize(
    ("pattern", "prompt", "blocked"),
    [
        (r"gore\W", "so much gore!", True),  # casefolding the source made this \w
        (r"gore\W", "gores", False),
        (r"\d\D", "7a", True),
        (r"\d\D", "77", False),
        (r"go\Bre", "gore", True),  # \B stays "not a boundary", not \b
        (r"go\Bre", "go re", False),
        (r"\Agore", "gore first", True),  # \A stays "start", not a bell character
        (r"\Agore", "then gore", False),
        (r"[A-Z]{3}\d", "abc1", True),  # any case, with the class as written
        (r"bl(oo)+d", "so much BLOOOOD", True),
        (r"bl(oo)+d", "so much BLÔÔD", True),  # matched with accents removed too
        (r"café", "CAFÉ CRÈME", True),  # matched as written too
        (r"^gore", "a quiet scene", False),
    ],
)
def test_regex_escapes_keep_their_meaning(pattern: str, prompt: str, blocked: bool) -> None:
    assert check_regex(pattern) is None
    assert blocks(regex(pattern), prompt) is blocked


ATOMS = [r"\w", r"\W", r"\d", r"\D", r"\s", r"\S", ".", "[A-Z]", "[^a-c]", r"[\W\d]", r"[b-y]"]
ATOMS += ["a", "B", "z", "1", r"\.", "-", " ", "!"]
ANCHORS = [r"\b", r"\B", r"\A", "^", "$"]
QUANTIFIERS = ["", "", "?", "*", "+", "{1,3}", "*?", "+?"]


def _quantified(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(inner, st.sampled_from(QUANTIFIERS)).map(lambda t: f"(?:{t[0]}){t[1]}")


atom = st.sampled_from(ATOMS) | st.sampled_from(ANCHORS)
regex_source = st.recursive(
    atom,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4).map("".join)
        | st.lists(inner, min_size=2, max_size=3).map("|".join).map(lambda s: f"(?:{s})")
        | _quantified(inner)
    ),
    max_leaves=8,
)
# not empty: Python's \B never matches an empty text, RE2's does (and check_regex refuses a
# pattern that matches an empty prompt)
ascii_prompt = st.text(alphabet="abcxyzABCXYZ019 _!-.,", min_size=1, max_size=30)


@settings(max_examples=400)
@given(pattern=regex_source, prompt=ascii_prompt)
def test_regexes_mean_what_python_re_means_on_ascii(pattern: str, prompt: str) -> None:
    """On ASCII text, a pattern means what it means to Python's `re` (case-insensitive): the
    source reaches the engine untouched."""
    expected = re.search(pattern, prompt, re.IGNORECASE | re.ASCII) is not None
    assert blocks(regex(pattern), prompt) is expected


N = 200_000
CATASTROPHIC = [  # (pattern, a prompt it backtracks on without matching, one it matches)
    (r"(a+)+$", "a" * N + "!", "a" * N),
    (r"(a|a)*b", "a" * N, "a" * N + "b"),
    (r"(a|aa)+$", "a" * N + "!", "a" * N),
    (r"(x+x+)+y", "x" * N, "x" * N + "y"),
    (r"(.*a){20}$", "a" * N + "!", "a" * N),
    (r"(\w+\s?)+!$", "ab " * (N // 3) + "?", "ab " * (N // 3) + "!"),
]


@pytest.mark.parametrize(("pattern", "adversarial", "matching"), CATASTROPHIC)
def test_catastrophic_patterns_finish_on_long_adversarial_prompts(
    pattern: str, adversarial: str, matching: str
) -> None:
    """Each pattern backtracks exponentially on stdlib `re` (about 30 characters already take
    minutes, see bench/blocklist.py); RE2 is linear in the prompt by construction, so 200 000
    characters finish, with the right answer. No clock: finishing is the point."""
    assert check_regex(pattern) is None
    assert not blocks(regex(pattern), adversarial)
    assert blocks(regex(pattern), matching)


A_MATCHERS = ["a", r"\w", "[a-z]", ".", "[^#]", r"\S", "(?:a|a)", r"(?:a|\w)", "(?:aa|a)"]


@st.composite
def nested_quantifiers(draw: st.DrawFn) -> str:
    """A pattern that backtracks exponentially on "aaaa…" without a "#": (X+)+#, (X|X)*#, …"""
    inner = draw(st.sampled_from(A_MATCHERS))
    for _ in range(draw(st.integers(1, 3))):
        quantifier = draw(st.sampled_from(["+", "*", "{1,5}"]))
        inner = f"(?:(?:{inner}){quantifier})" + draw(st.sampled_from(["+", "*"]))
    return inner + "#"


@settings(max_examples=60)
@given(pattern=nested_quantifiers(), length=st.integers(1, 50_000), closed=st.booleans())
def test_nested_quantifiers_finish_on_long_prompts(pattern: str, length: int, closed: bool) -> None:
    """Generated nested quantifiers (the shape that backtracks exponentially on the stdlib `re`,
    see bench/blocklist.py) on prompts up to 50 000 characters: every one finishes, and is
    right. No clock: finishing is the point."""
    prompt = "a" * length + ("#" if closed else "")
    assert check_regex(pattern) is None
    assert blocks(regex(pattern), prompt) is closed


# -- refused when added ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(a)\1", "backreferences"),
        (r"(?P<x>a)(?P=x)", "backreferences"),
        (r"gore(?=s)", "lookahead or lookbehind"),
        (r"(?<!no)gore", "lookahead or lookbehind"),
        (r"a++", "possessive"),
        (r"(?>ab)", "atomic"),
        (r"gore\Z", r"\z"),
        (r"x*", "empty prompt"),
        (r"^", "empty prompt"),
        (r"\bгор\b", r"\pL"),
        (r"\wé", r"\pL"),
        (r"[", "missing ]"),
        (r"(?x) g o r e", "invalid perl operator"),
        ("a" * 201, "under 200 characters"),
        ("gore\ud800", "not valid text"),
    ],
)
def test_unusable_patterns_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    problem = check_regex(pattern)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("pattern", [r"gore\W", r"\pL+ой", r"гор", r"(?i)b(oo)+d", r"\bgore\b"])
def test_usable_patterns_are_accepted(pattern: str) -> None:
    assert check_regex(pattern) is None


def test_a_saved_pattern_re2_cannot_run_is_skipped_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entries = [BlockedPattern(r"(a)\1x", True), BlockedPattern("gore", False)]
    with caplog.at_level(logging.WARNING, logger="bot.pipeline.blocklist"):
        assert first_blocked(entries, ["aax"]) is None
        assert first_blocked(entries, ["Gore!"]) == "gore"
    assert any("not used" in r.getMessage() for r in caplog.records)


def test_lone_surrogates_in_a_prompt_are_matched_not_crashed_on() -> None:
    assert first_blocked(regex("gore"), ["\ud800 gore"]) == "gore"
    assert first_blocked(word("gore"), ["\ud800 gore"]) == "gore"
