"""WebhookTargets: bounded, and never keeps an answer read across a change."""

from __future__ import annotations

from storage.webhook_targets import WebhookTarget, WebhookTargets


def target(n: int, provider_job_id: str | None = None) -> WebhookTarget:
    return WebhookTarget(f"job{n}", "eachlabs", provider_job_id)


def test_remember_and_forget() -> None:
    cache = WebhookTargets()
    cache.remember("t1", target(1), cache.generation)
    assert cache.get("t1") == target(1)
    cache.forget("t1")
    assert cache.get("t1") is None


def test_an_answer_read_before_a_forget_is_dropped() -> None:
    cache = WebhookTargets()
    generation = cache.generation  # the handler starts its database read
    cache.forget("t1")  # a write to that job commits meanwhile
    cache.remember("t1", target(1), generation)  # the (possibly old) answer arrives
    assert cache.get("t1") is None
    cache.remember("t1", target(1, "p-9"), cache.generation)  # a fresh read is kept
    assert cache.get("t1") == target(1, "p-9")


def test_capacity_drops_the_oldest() -> None:
    cache = WebhookTargets(capacity=3)
    for n in range(5):
        cache.remember(f"t{n}", target(n), cache.generation)
    assert len(cache) == 3
    assert [cache.get(f"t{n}") is not None for n in range(5)] == [False, False, True, True, True]
