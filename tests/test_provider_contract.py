"""The behaviour every video provider adapter shares, checked against each vendor's double.

Each test runs once per vendor case in tests/provider_cases (ids name the vendor); the cases
supply the vendor's wire facts, this file the rules: what goes on the wire, that a create is never
sent twice once it may have arrived, how errors, statuses and webhooks are read, and that parsers
of outside input raise nothing but the provider errors. Vendor-only behaviour stays in
tests/test_provider_<vendor>.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.providers.base import ProviderJob, ProviderState, ProviderStatus, VideoProvider
from bot.providers.download import DownloadPolicy, download
from bot.providers.errors import (
    ErrorKind,
    ProviderError,
    WebhookAuthError,
    WebhookParseError,
    WebhookRefused,
)
from bot.providers.http import ProviderHttp
from tests.provider_cases import CASES
from tests.provider_cases.case import Reply, Route, Signer, VendorCase, Webhooks
from tests.provider_doubles.base import FakeJob, VendorDouble
from tests.provider_support import (
    NOW,
    PLAIN,
    SAMPLE_VIDEO,
    Make,
    connect_attempts,
    double,
    free_port,
    http,
    json_object,
    make,
    strictly_equal,
)

__all__ = ["double", "http", "make"]
Received = list[tuple[dict[str, str], bytes]]
Values = tuple[Any, ...]


def params(pick: Callable[[VendorCase], Iterable[tuple[str, Values]]]) -> list[Any]:
    """pytest params (case, *values) for each (label, values) `pick` yields for a vendor."""
    return [
        pytest.param(case, *values, id=f"{case.name}-{label}" if label else case.name)
        for case in CASES
        for label, values in pick(case)
    ]


def each(field: str) -> list[Any]:
    """(case, item) for every item of the case's tuple `field`; ids vendor-index."""
    return params(lambda case: ((str(i), (item,)) for i, item in enumerate(getattr(case, field))))


def vendors(keep: Callable[[VendorCase], object] | None = None) -> list[Any]:
    """(case,) for every vendor (that `keep` is true for)."""
    return params(lambda case: [("", ())] if keep is None or keep(case) else [])


def routes_with(*outcomes: object) -> list[Any]:
    """(case, route, outcome) for every create route of every vendor (no outcomes: (case, route))."""
    if not outcomes:
        return params(lambda c: ((r.name, (r,)) for r in c.routes))
    return params(lambda c: ((f"{r.name}-{o}", (r, o)) for r in c.routes for o in outcomes))


def hooks(case: VendorCase) -> Webhooks:
    assert case.webhooks is not None
    return case.webhooks


def signer(case: VendorCase) -> Signer:
    signing = hooks(case).signer
    assert signing is not None
    return signing


def signs(case: VendorCase) -> bool:
    return case.webhooks is not None and case.webhooks.signer is not None


def fields(status: ProviderStatus | ProviderError, expected: Mapping[str, Any]) -> dict[str, Any]:
    """The named attributes of `status`, to compare with `expected`."""
    return {name: getattr(status, name) for name in expected}


def job_of(double: VendorDouble, job_id: str) -> FakeJob:
    return double.jobs[job_id]


class Submitted(NamedTuple):
    provider: VideoProvider
    job: ProviderJob


@pytest.fixture
async def submitted(make: Make) -> Submitted:
    """The PLAIN request, submitted (without a webhook) through the case's adapter."""
    provider = make()
    sub = await provider.submit(PLAIN, webhook_url=None)
    return Submitted(provider, sub.job)


# -- the request on the wire ------------------------------------------------------------------


@pytest.mark.parametrize("case", vendors())
async def test_plain_request_on_the_wire(
    case: VendorCase, double: VendorDouble, make: Make
) -> None:
    assert case.capabilities.problems(PLAIN) == []
    sub = await make().submit(PLAIN, webhook_url=case.hook)
    [create] = double.creates_of(case.routes[0].path)
    assert double.creates == 1 and len(double.requests) == 1
    assert (create.path, create.query) == (case.routes[0].path, dict(case.plain_query))
    assert create.header(case.key_header[0]) == case.key_header[1]
    assert all(create.header(name) is None for name in case.absent_headers)
    assert create.header("Content-Type") == "application/json"
    assert strictly_equal(create.json, case.plain_body), create.json
    assert sub.job == case.plain_job(double)
    assert fields(sub.status, case.plain_status) == case.plain_status
    hook = case.hook if case.webhooks is not None else None
    assert job_of(double, sub.job.id).webhook_url == hook


@pytest.mark.parametrize(
    ("case", "request_", "body"),
    params(lambda c: ((label, (request, body)) for label, request, body in c.wire)),
)
async def test_request_on_the_wire(
    case: VendorCase, request_: Any, body: dict[str, Any], double: VendorDouble, make: Make
) -> None:
    assert case.capabilities.problems(request_) == []
    await make().submit(request_, webhook_url=None)
    [create] = double.creates_of(case.routes[0].path)
    assert create.query == {}, "without a webhook nothing goes in the query"
    assert strictly_equal(create.json, body), create.json


@pytest.mark.parametrize(
    ("case", "request_", "problems"),
    params(lambda c: ((label, (request, problems)) for label, request, problems in c.refused)),
)
async def test_what_the_vendor_cannot_do_is_refused_before_sending(
    case: VendorCase, request_: Any, problems: list[str], double: VendorDouble, make: Make
) -> None:
    assert case.capabilities.problems(request_) == problems
    with pytest.raises(ProviderError) as info:
        await make().submit(request_, webhook_url=case.hook)
    assert info.value.kind is ErrorKind.INVALID_INPUT and not info.value.outcome_unknown
    assert info.value.detail == " ".join(problems)
    assert double.creates == 0 and double.requests == []


@pytest.mark.parametrize("case", vendors(lambda c: c.strictness))
async def test_the_double_is_strict_about_the_schema(
    case: VendorCase, double: VendorDouble
) -> None:
    """What the adapter must get right: the double refuses each of these as the vendor does."""
    strict = case.strictness
    assert strict is not None
    url = f"{double.base_url}{case.routes[0].path}"
    auth = dict([case.key_header])
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json=strict.good, headers=auth) as response:
            assert response.status == strict.accepted
        for body in strict.bad:
            async with session.post(url, json=body, headers=auth) as response:
                assert response.status == strict.refused, body
                assert strict.refusal(await response.json()), body
        async with session.post(url, json=strict.good, headers=strict.foreign_auth) as response:
            assert response.status == 401


# -- a create is never sent twice once it may have arrived ------------------------------------


@pytest.fixture
async def impatient(http: ProviderHttp) -> AsyncIterator[ProviderHttp]:
    """A client that gives up on an answer after half a second."""
    client = ProviderHttp(http.session, timeout_s=0.5, connect_retries=2, retry_delay_s=0.2)
    yield client
    await client.close()


@pytest.mark.parametrize(("case", "route", "failure"), routes_with("reset", "hang"))
async def test_no_answer_after_send_is_never_resent(
    case: VendorCase,
    route: Route,
    failure: str,
    double: VendorDouble,
    make: Make,
    impatient: ProviderHttp,
) -> None:
    double.next_create(failure)
    provider = make(route=route.name, client=impatient, reply_timeout_s=0.5)
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=case.hook)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    # submit() awaits its own retries: had it resent, the double would hold a second create now
    assert double.creates == 1 and [r.path for r in double.requests] == [route.path]


@pytest.mark.parametrize(("case", "route", "status"), routes_with(502, 504))
async def test_gateway_timeout_on_create_is_an_unknown_outcome(
    case: VendorCase, route: Route, status: int, double: VendorDouble, make: Make
) -> None:
    double.next_create("status", status, "<html><h1>504 Gateway Time-out</h1></html>")
    with pytest.raises(ProviderError) as info:
        await make(route=route.name).submit(PLAIN, webhook_url=case.hook)
    assert info.value.outcome_unknown and info.value.kind is ErrorKind.TRANSIENT
    assert info.value.status_code == status
    # not sent again: not to another API version, not without the webhook
    assert double.creates == 1 and [r.path for r in double.requests] == [route.path]


@pytest.mark.parametrize(("case", "route"), routes_with())
async def test_connection_refused_is_retried_once_listening(
    case: VendorCase, route: Route, http: ProviderHttp, make: Make
) -> None:
    port = free_port()
    patient = ProviderHttp(http.session, timeout_s=5.0, connect_retries=5, retry_delay_s=0.1)
    provider = make(route=route.name, origin=f"http://127.0.0.1:{port}", client=patient)
    late = case.double_type()
    try:
        with connect_attempts(port) as attempts:
            submit = asyncio.create_task(provider.submit(PLAIN, webhook_url=None))
            refused = asyncio.create_task(attempts.first.wait())  # nothing listens there yet
            await asyncio.wait({submit, refused}, return_when=asyncio.FIRST_COMPLETED)
            assert refused.done() and not submit.done(), "no connect attempt was seen"
            await late.start(port)
            sub = await submit
        assert attempts.count >= 2, "the create was sent again after the refused connect"
        assert sub.job.id == route.first_job_id
        assert late.creates == 1 and len(late.creates_of(route.path)) == 1
    finally:
        await late.stop()
        await patient.close()


@pytest.mark.parametrize(("case", "route"), routes_with())
async def test_connection_refused_forever_is_transient_not_unknown(
    case: VendorCase, route: Route, make: Make
) -> None:
    provider = make(route=route.name, origin=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ProviderError) as info:
        await provider.submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.TRANSIENT and not info.value.outcome_unknown


# -- creates the vendor refuses or answers badly ------------------------------------------------


@pytest.mark.parametrize(("case", "reply"), each("create_errors"))
async def test_create_errors_are_classified(
    case: VendorCase, reply: Reply, double: VendorDouble, make: Make
) -> None:
    double.next_create("status", reply.status, reply.body, dict(reply.headers))
    with pytest.raises(ProviderError) as info:
        await make(route=case.direct_route, now_s=NOW).submit(PLAIN, webhook_url=None)
    error = info.value
    assert error.kind is reply.kind and error.status_code == reply.status
    assert error.provider == case.name and not error.outcome_unknown
    assert error.retry_after_s == reply.retry_after_s
    if reply.vendor_code is not ...:
        assert error.vendor_code == reply.vendor_code
    assert reply.detail_has in error.detail
    assert not reply.detail_lacks or reply.detail_lacks not in error.detail
    assert double.creates == 1 and len(double.requests) == 1


@pytest.mark.parametrize(("case", "body"), each("malformed_creates"))
async def test_malformed_create_replies_are_unknown_outcomes(
    case: VendorCase, body: Any, double: VendorDouble, make: Make
) -> None:
    double.next_create("status", case.create_ok, body)
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.UNKNOWN and info.value.status_code == case.create_ok
    assert info.value.outcome_unknown, "a 2xx create may have made a job: never resend blindly"
    assert double.creates == 1 and len(double.requests) == 1


@pytest.mark.parametrize("case", vendors())
async def test_a_wrong_key_is_refused_on_create(
    case: VendorCase, double: VendorDouble, make: Make
) -> None:
    with pytest.raises(ProviderError) as info:
        await make(key=case.wrong_key).submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.AUTH and info.value.status_code == 401
    assert double.jobs == {} and double.creates == 1


@pytest.mark.parametrize("case", vendors(lambda c: c.empty_account))
async def test_an_empty_account_is_refused_on_create(
    case: VendorCase, double: VendorDouble, make: Make
) -> None:
    assert case.empty_account is not None
    case.empty_account(double)
    with pytest.raises(ProviderError) as info:
        await make().submit(PLAIN, webhook_url=None)
    assert info.value.kind is ErrorKind.OUT_OF_FUNDS and info.value.status_code == 402
    assert double.jobs == {}


# -- polling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", vendors())
async def test_poll_through_to_success_and_download(
    case: VendorCase,
    double: VendorDouble,
    submitted: Submitted,
    http: ProviderHttp,
    tmp_path: Path,
) -> None:
    provider, job = submitted
    seen = [await provider.poll(job) for _ in case.polls]
    assert [fields(s, expected) for s, expected in zip(seen, case.polls, strict=True)] == list(
        case.polls
    )
    final = seen[-1]
    assert final.state is ProviderState.SUCCEEDED
    assert final.video_url == double.file_url(job.id)
    gets = [r for r in double.requests if r.method == "GET"]
    assert [(r.path, r.query) for r in gets] == list(case.poll_gets(job.id))
    assert all(r.header(case.key_header[0]) == case.key_header[1] for r in gets)
    assert all(r.header(name) is None for r in gets for name in case.absent_headers)
    size = await download(
        http.session,
        final.video_url,
        tmp_path / "v.mp4",
        max_bytes=10**7,
        timeout_s=5,
        policy=DownloadPolicy.trusting([double.base_url]),
    )
    assert (tmp_path / "v.mp4").read_bytes() == double.video_bytes
    assert size == len(double.video_bytes)


@pytest.mark.parametrize("case", vendors())
async def test_expired_result_url(
    case: VendorCase,
    double: VendorDouble,
    submitted: Submitted,
    http: ProviderHttp,
    tmp_path: Path,
) -> None:
    provider, job = submitted
    job_of(double, job.id).script = [case.word("succeeded")]
    status = await provider.poll(job)
    assert status.video_url == double.file_url(job.id)
    double.expired_files.add(job.id)
    folder = tmp_path / "downloads"
    folder.mkdir()
    with pytest.raises(ProviderError) as info:
        await download(
            http.session,
            status.video_url,
            folder / "v.mp4",
            max_bytes=10**7,
            timeout_s=5,
            policy=DownloadPolicy.trusting([double.base_url]),
        )
    assert info.value.kind is ErrorKind.RESULT_EXPIRED
    assert not list(folder.iterdir()), "no partial file is left behind"


@pytest.mark.parametrize(("case", "failure"), each("failures"))
async def test_job_failures_are_classified(
    case: VendorCase, failure: Any, double: VendorDouble, submitted: Submitted
) -> None:
    provider, job = submitted
    scripted = job_of(double, job.id)
    scripted.script, scripted.error = [case.word("queued"), failure.word], failure.message
    case.fail_job(double, scripted, failure)
    assert (await provider.poll(job)).state is ProviderState.QUEUED
    status = await provider.poll(job)
    assert status.state is ProviderState.FAILED
    assert status.vendor_status == (failure.vendor_status or case.failed_status)
    error = status.error
    assert error is not None and error.kind is failure.kind and error.provider == case.name
    assert failure.message in error.detail
    if case.exact_failure_detail:
        assert error.detail == failure.message
    if failure.vendor_code is not ...:
        assert error.vendor_code == failure.vendor_code
    if failure.status_code is not ...:
        assert error.status_code == failure.status_code


@pytest.mark.parametrize("case", vendors())
async def test_poll_of_an_unknown_job_is_not_found(case: VendorCase, make: Make) -> None:
    with pytest.raises(ProviderError) as info:
        await make().poll(ProviderJob(case.unknown_job))
    assert info.value.kind is ErrorKind.NOT_FOUND and info.value.status_code == 404
    if case.not_found_code is not ...:
        assert info.value.vendor_code == case.not_found_code


@pytest.mark.parametrize("case", vendors())
async def test_poll_with_a_wrong_key_is_refused(
    case: VendorCase, make: Make, submitted: Submitted
) -> None:
    with pytest.raises(ProviderError) as info:
        await make(key=case.wrong_key).poll(submitted.job)
    assert info.value.kind is ErrorKind.AUTH and info.value.status_code == 401


@pytest.mark.parametrize(("case", "reply"), each("poll_errors"))
async def test_poll_errors_are_classified(
    case: VendorCase, reply: Reply, double: VendorDouble, submitted: Submitted
) -> None:
    provider, job = submitted
    assert case.script_poll is not None
    case.script_poll(double, reply)
    with pytest.raises(ProviderError) as info:
        await provider.poll(job)
    assert info.value.kind is reply.kind and info.value.retry_after_s == reply.retry_after_s
    # one bad answer changes nothing: the next poll reads the job again
    assert (await provider.poll(job)).state is ProviderState.QUEUED


# -- statuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "word", "state"),
    params(lambda c: ((word, (word, state)) for word, state in c.status_words)),
)
def test_every_status_word(case: VendorCase, word: str, state: ProviderState) -> None:
    status = case.parser().parse_status(case.status_body(word))
    assert status.state is state and status.vendor_status == case.vendor_status(word)
    assert status.video_url == (SAMPLE_VIDEO if state is ProviderState.SUCCEEDED else None)
    assert (status.error is not None) == (state is ProviderState.FAILED)
    if status.error is not None and case.status_error_detail is not None:
        assert status.error.detail == case.status_error_detail
    expected = case.status_fields(word, state)
    assert fields(status, expected) == expected


@pytest.mark.parametrize("case", vendors())
def test_unknown_status_word_is_an_error(case: VendorCase) -> None:
    with pytest.raises(ProviderError) as info:
        case.parser().parse_status(case.status_body("teleported"))
    assert info.value.kind is ErrorKind.UNKNOWN and "teleported" in info.value.detail.lower()


@pytest.mark.parametrize(("case", "body"), each("unreadable_statuses"))
def test_unreadable_statuses_are_errors(case: VendorCase, body: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as info:
        case.parser().parse_status(body)
    assert info.value.kind is ErrorKind.UNKNOWN


@pytest.mark.parametrize(("case", "row"), each("no_video_statuses"))
def test_success_without_a_video_is_not_terminal(case: VendorCase, row: Any) -> None:
    body, expected = row
    status = case.parser().parse_status(body)
    assert status.state is ProviderState.RUNNING and not status.state.is_terminal
    assert status.video_url is None
    assert fields(status, expected) == expected


NON_FINITE = [float("inf"), float("-inf"), float("nan"), "Infinity", "1e999", True]


@pytest.mark.parametrize(
    ("case", "value"),
    params(lambda c: ((str(v), (v,)) for v in NON_FINITE) if c.progress_body else ()),
)
def test_non_finite_progress_is_ignored(case: VendorCase, value: Any) -> None:
    assert case.progress_body is not None
    status = case.parser().parse_status(case.progress_body(value))
    assert status.state is ProviderState.RUNNING and status.progress_pct is None


@pytest.mark.parametrize("case", vendors())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_status_parser_only_raises_provider_error(case: VendorCase, data: st.DataObject) -> None:
    body = data.draw(case.status_strategy)
    if not isinstance(body, dict):
        return
    with contextlib.suppress(ProviderError):
        status = case.parser().parse_status(body)
        assert status.state is not ProviderState.SUCCEEDED or status.video_url
        assert status.progress_pct is None or 0 <= status.progress_pct <= 100


# -- cancel -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", vendors(lambda c: c.cancel_call is None))
async def test_cancel_where_the_vendor_cannot(
    case: VendorCase, double: VendorDouble, submitted: Submitted
) -> None:
    assert await submitted.provider.cancel(submitted.job) is False
    assert [r.method for r in double.requests] == ["POST"], "nothing is asked"
    assert case.capabilities.cancel is False


@pytest.mark.parametrize("case", vendors(lambda c: c.cancel_call is not None))
async def test_cancel_where_the_vendor_can(
    case: VendorCase, double: VendorDouble, submitted: Submitted
) -> None:
    assert case.cancel_call is not None and case.capabilities.cancel is True
    provider, job = submitted
    assert await provider.cancel(job) is True
    asked = double.requests[1:]  # (some vendors' cancel URL comes from a fresh poll)
    assert (asked[-1].method, asked[-1].path) == case.cancel_call(job.id)
    assert all(r.header(case.key_header[0]) == case.key_header[1] for r in asked)
    assert (await provider.poll(job)).state is ProviderState.CANCELLED


# -- webhooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "variant"),
    params(lambda c: ((v, (v,)) for v in c.webhooks.variants) if c.webhooks else ()),
)
async def test_real_webhook_is_accepted(
    case: VendorCase,
    variant: str,
    double: VendorDouble,
    make: Make,
    receiver: tuple[str, Received],
) -> None:
    url, received = receiver
    provider = make()
    await provider.prepare_webhooks()
    sub = await provider.submit(PLAIN, webhook_url=case.hook)
    job = job_of(double, sub.job.id)
    assert job.webhook_url == case.hook
    assert await hooks(case).send(double, job, url, True, variant) == 200
    [(headers, body)] = received
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == sub.job.id
    assert event.delivery_id == hooks(case).delivery_ids[0]
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED
    assert event.status.video_url == double.file_url(sub.job.id)


@pytest.mark.parametrize("case", vendors(lambda c: c.webhooks))
async def test_failure_webhook(
    case: VendorCase, double: VendorDouble, make: Make, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    provider = make()
    await provider.prepare_webhooks()
    sub = await provider.submit(PLAIN, webhook_url=case.hook)
    job = job_of(double, sub.job.id)
    hooks(case).flag(job)
    await hooks(case).send(double, job, url, False, hooks(case).variants[-1])
    event = provider.parse_webhook(*received[0])
    assert event.provider_job_id == sub.job.id
    assert event.delivery_id == hooks(case).delivery_ids[1]
    assert event.status is not None and event.status.state is ProviderState.FAILED
    error = event.status.error
    assert error is not None and error.kind is ErrorKind.CONTENT_POLICY
    assert fields(error, hooks(case).failure_fields) == hooks(case).failure_fields


@pytest.mark.parametrize(
    ("case", "body"),
    params(
        lambda c: ((str(i), (b,)) for i, b in enumerate(c.webhooks.garbage if c.webhooks else ()))
    ),
)
def test_garbage_webhooks_are_refused(case: VendorCase, body: bytes) -> None:
    """Refused as unreadable (400), also when validly signed."""
    if signs(case):
        parser, headers = signer(case).parser(), signer(case).sign(body)
    else:
        parser, headers = hooks(case).parsers[0](), {"Content-Type": "application/json"}
    with pytest.raises(WebhookParseError) as info:
        parser.parse_webhook(headers, body)
    assert info.value.http_status == 400


COMMON_FORGERIES = ["tampered_body", "wrong_key", "stale", "future", "no_signature"]
COMMON_FORGERIES += ["no_timestamp", "garbage_signature"]


@pytest.mark.parametrize(
    ("case", "mutation"),
    params(
        lambda c: ((m, (m,)) for m in [*COMMON_FORGERIES, *signer(c).forgeries]) if signs(c) else ()
    ),
)
def test_webhook_forgeries_are_refused(case: VendorCase, mutation: str) -> None:
    signing = signer(case)
    provider = signing.parser()
    body = signing.sample("p1")
    headers = signing.sign(body)
    assert provider.parse_webhook(headers, body).provider_job_id == "p1"
    if mutation == "tampered_body":
        body = body.replace(b"p1", b"p2")
    elif mutation == "wrong_key":
        headers = signing.sign(body, wrong_key=True)
    elif mutation in ("stale", "future"):
        headers = signing.sign(body, ts=NOW - 301 if mutation == "stale" else NOW + 301)
    elif mutation == "no_signature":
        headers.pop(signing.signature_header)
    elif mutation == "no_timestamp":
        headers.pop(signing.timestamp_header)
    elif mutation == "garbage_signature":
        headers[signing.signature_header] = signing.garbage_signature
    else:
        body, headers = signing.forgeries[mutation](body, headers)
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    if signing.background is not None:  # no event loop here: no key fetch was started
        assert signing.background(provider) is None


@pytest.mark.parametrize("case", vendors(lambda c: signs(c) and signer(c).sign_as_double))
async def test_a_webhook_before_the_keys_are_known_heals_itself(
    case: VendorCase, double: VendorDouble, make: Make
) -> None:
    signing = signer(case)
    assert signing.sign_as_double is not None and signing.background is not None
    provider = make(now_s=NOW)
    body = signing.sample("p1")
    headers = signing.sign_as_double(double, body, "p1")
    with pytest.raises(WebhookAuthError):
        provider.parse_webhook(headers, body)
    fetch = signing.background(provider)
    assert isinstance(fetch, asyncio.Task)
    await fetch  # the key or secret fetch the refused delivery started
    event = provider.parse_webhook(headers, body)
    assert event.provider_job_id == "p1"
    assert event.status is not None and event.status.state is ProviderState.SUCCEEDED


@pytest.mark.parametrize("case", vendors())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_webhook_parser_only_raises_webhook_error(case: VendorCase, data: st.DataObject) -> None:
    if case.webhooks is None:  # a vendor without webhooks refuses every delivery
        body = data.draw(st.binary(max_size=200) | case.status_strategy.map(_encoded))
        headers = data.draw(st.dictionaries(st.sampled_from(["Content-Type", "x"]), st.text()))
        with pytest.raises(WebhookRefused):
            case.parser().parse_webhook(headers, body)
        return
    parser = data.draw(st.sampled_from(case.webhooks.parsers))()
    body, headers = data.draw(case.webhooks.bodies), data.draw(case.webhooks.headers)
    try:
        event = parser.parse_webhook(headers, body)
    except WebhookRefused:
        return
    assert event.provider_job_id or not case.webhooks.names_the_job


def _encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("case", vendors(lambda c: signs(c) and signer(c).expected_event))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_signed_webhook_parser_only_raises_parse_errors(
    case: VendorCase, data: st.DataObject
) -> None:
    """Past a valid signature, arbitrary bodies yield an event or a WebhookParseError."""
    signing = signer(case)
    assert signing.expected_event is not None
    body = data.draw(hooks(case).bodies)
    ref = data.draw(st.text(min_size=1, max_size=20).filter(str.strip)).strip()
    try:
        event = signing.parser().parse_webhook(signing.sign(body, ref=ref), body)
    except WebhookParseError:
        return
    parsed = json_object(body)
    assert parsed is not None
    assert (event.provider_job_id, event.delivery_id) == signing.expected_event(parsed, ref)
