"""The playground page in a real Chromium (Debian's `chromium`, driven by Playwright's Python API;
nothing downloads a browser) against the real bot in the scenario's Discord double: every step a
newcomer takes, as the owner, a moderator and a member, by keyboard where a person would type.
Outside CI without Chromium the test is skipped; under CI=true it fails instead.

It also saves docs/playground.png (a delivered clip) for the README."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.playground.scenario import MEMBER, MODERATOR, OWNER
from tests.playground_support import Stack, playground_stack

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "playground.png"
MIB = 1024 * 1024
WAIT_MS = 60_000
pytestmark = pytest.mark.slow


def chromium_or_skip() -> str:
    """Debian's Chromium, or skip (fail under CI) saying what is missing."""
    path = os.environ.get("KLINGBOT_CHROMIUM") or shutil.which("chromium")
    missing = None
    if path is None:
        missing = "no Chromium found (install Debian's `chromium`, or set KLINGBOT_CHROMIUM)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "Playwright is not installed (pip install -e '.[test]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs the browser test: {missing}")
        pytest.skip(missing)
    assert path is not None
    return path


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with playground_stack(tmp_path) as s:
        yield s


@pytest.fixture
def chromium() -> str:
    return chromium_or_skip()


@pytest.fixture
async def page(chromium: str, stack: Stack) -> AsyncIterator[Any]:
    """A page of the playground in Chromium (found before the playground starts)."""
    from playwright.async_api import async_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=args)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(stack.url)
        await page.locator("body[data-ready=true]").wait_for(timeout=WAIT_MS)
        yield page
        await browser.close()
        assert errors == [], f"errors in the page: {errors}"


async def act_as(page: Any, person_id: int) -> None:
    from playwright.async_api import expect

    await page.select_option("#person-select", str(person_id))
    await expect(page.locator(f'.member.acting-now[data-member-id="{person_id}"]')).to_be_visible()
    await expect(page.locator("#connection")).to_have_text("Live", timeout=WAIT_MS)


async def command(page: Any, typed: str, label: str) -> None:
    """Type `typed` in the message box; the highlighted suggestion must be `label`; pick it."""
    from playwright.async_api import expect

    box = page.locator("#composer-input")
    await box.focus()
    await box.fill("")
    await box.press_sequentially(typed)
    active = page.locator('#suggestions [role=option][aria-selected="true"]')
    await expect(active.locator(".suggestion-name")).to_have_text(label)
    await box.press("Enter")
    await expect(page.locator("#options-legend")).to_contain_text(label)


async def open_optional(page: Any) -> None:
    details = page.locator("#option-fields details")
    if not await details.evaluate("d => d.open"):
        await details.locator("summary").click()


def last_message(page: Any, text: str) -> Any:
    return page.locator("#messages .message").filter(has_text=text).last


async def test_a_newcomer_uses_every_role_in_the_browser(stack: Stack, page: Any) -> None:
    from playwright.async_api import expect

    # The owner funds the server's pool.
    await act_as(page, OWNER)
    await command(page, "/klingadmin fu", "/klingadmin fund")
    await expect(page.locator("#opt-credits")).to_be_focused()
    await page.locator("#opt-credits").fill("2000")
    await page.locator("#opt-credits").press("Enter")
    funded = last_message(page, "Funded the pool")
    await expect(funded).to_contain_text("Only you can see this", timeout=WAIT_MS)

    # A member makes a video through the form: arrow keys through the list, Enter picks.
    await act_as(page, MEMBER)
    await expect(page.locator("#messages").get_by_text("Funded the pool")).to_have_count(0)
    box = page.locator("#composer-input")
    await box.fill("")
    await box.press_sequentially("/")
    await box.press("ArrowUp")  # wraps to the last command, /video
    active = page.locator('#suggestions [role=option][aria-selected="true"]')
    await expect(active.locator(".suggestion-name")).to_have_text("/video")
    await box.press("Enter")
    await expect(page.locator("#opt-prompt")).to_be_focused()
    await page.keyboard.type("a red fox running through snow")
    await open_optional(page)
    await page.locator("#opt-duration").fill("3")
    await page.locator("#opt-duration").press("Enter")

    receipt = last_message(page, "Only you can see this").filter(has_text="credits")
    await expect(receipt).to_be_visible(timeout=WAIT_MS)
    status = (
        page.locator("#messages .message:not(.ephemeral)")
        .filter(has=page.locator(".embed-description", has_text="a red fox running through snow"))
        .first
    )
    await expect(status).to_be_visible(timeout=WAIT_MS)
    first_title = await status.locator(".embed-title").inner_text()
    await expect(status.locator(".embed-title")).not_to_have_text(first_title, timeout=WAIT_MS)
    await expect(status.locator(".embed-title")).to_contain_text("Done", timeout=WAIT_MS)

    clip = page.locator("#messages .message").filter(has=page.locator("video")).last
    await expect(clip).to_be_visible(timeout=WAIT_MS)
    duration_s = await play(page, clip.locator("video"))
    assert abs(duration_s - 3) <= 0.5, duration_s
    await clip.scroll_into_view_if_needed()
    await page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000

    details = clip.get_by_role("button", name="Details")
    await details.focus()
    await details.press("Enter")
    answer = last_message(page, "Only you can see this").filter(has=page.locator(".embed-title"))
    await expect(answer.locator(".embed-title")).to_contain_text("Job ", timeout=WAIT_MS)

    # A moderator caps the pool; the member is refused past it, with the reset time.
    await act_as(page, MODERATOR)
    await command(page, "/pool cap", "/pool cap")
    await open_optional(page)
    await page.locator("#opt-credits").fill("1")
    await page.locator("#opt-credits").press("Enter")
    await expect(last_message(page, "set the daily pool cap")).to_be_visible(timeout=WAIT_MS)

    await act_as(page, MEMBER)
    await command(page, "/video", "/video")
    await page.keyboard.type("a second fox")
    await page.keyboard.press("Enter")
    refused = last_message(page, "daily credits")
    await expect(refused).to_contain_text("Only you can see this", timeout=WAIT_MS)
    reset = refused.locator("time.ts").first
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    await expect(reset).to_have_attribute("datetime", re.compile(f"^{tomorrow}T00:00:00"))

    await act_as(page, MODERATOR)  # the cap goes again
    await command(page, "/pool cap", "/pool cap")
    await page.keyboard.press("Enter")
    await expect(last_message(page, "to no limit")).to_be_visible(timeout=WAIT_MS)

    # /multishot opens its form: Escape closes it; opened again, it is sent and a clip arrives.
    await act_as(page, MEMBER)
    dialog = page.locator("#modal")
    for attempt in ("escape", "submit"):
        await command(page, "/multishot", "/multishot")
        await page.locator("#opt-duration").fill("3")
        await page.locator("#opt-duration").press("Enter")
        await expect(dialog).to_be_visible(timeout=WAIT_MS)
        if attempt == "escape":
            await page.keyboard.press("Escape")
            await expect(dialog).to_be_hidden()
            await expect(page.locator("#composer-input")).to_be_focused()
    await expect(page.get_by_label("Shot 1 (seconds: prompt) *")).to_be_focused()
    await page.keyboard.type("3: a fox wakes up in its den")
    await dialog.get_by_role("button", name="Submit").click()
    await expect(dialog).to_be_hidden(timeout=WAIT_MS)
    videos = page.locator("#messages .message video")
    await expect(videos).to_have_count(2, timeout=WAIT_MS)

    # /video in the 1 MiB channel: the clip posted fits.
    await page.locator(".channel-button", has_text="small-uploads").click()
    await command(page, "/video", "/video")
    await page.keyboard.type("a fox in a small channel")
    await open_optional(page)
    await page.locator("#opt-duration").fill("5")
    await page.locator("#opt-duration").press("Enter")
    small = page.locator("#messages .message video").last
    await expect(small).to_be_visible(timeout=WAIT_MS)
    size = int(await small.get_attribute("data-size") or 0)
    assert 0 < size <= MIB
    await play(page, small)


async def play(page: Any, video: Any) -> float:
    """Start the clip (muted, as autoplay rules allow) and wait until it has a frame to show;
    its duration in seconds."""
    await video.evaluate("v => { v.muted = true; return v.play(); }")
    await video.evaluate(
        "v => new Promise(r => v.readyState >= 2 ? r() : v.addEventListener('loadeddata', r))"
    )
    state = await video.evaluate("v => ({ready: v.readyState, duration: v.duration})")
    assert state["ready"] >= 2
    return float(state["duration"])
