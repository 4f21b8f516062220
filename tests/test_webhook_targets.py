"""WebhookTargets: bounded, and never keeps an answer read across a change."""

from __future__ import annotations

from storage.webhook_targets import WebhookTarget, WebhookTargets


def target(n: int, provider_job_id: str | None = None) -> WebhookTarget:
    return WebhookTarget(f"job{n}", "eachlabs", provider_job_id)


def test_remember_and_put() -> None:
    cache = WebhookTargets()
    cache.remember("t1", target(1), cache.generation)
    assert cache.get("t1") == target(1)
    cache.put("t1", target(1, "p-1"))  # a committed write changed it
    assert cache.get("t1") == target(1, "p-1")
    assert cache.get("t2") is None


def test_an_answer_read_before_a_put_is_dropped() -> None:
    cache = WebhookTargets()
    generation = cache.generation  # the handler starts its database read
    cache.put("t1", target(1, "p-9"))  # a write to that job commits meanwhile
    cache.remember("t1", target(1), generation)  # the (older) answer arrives
    assert cache.get("t1") == target(1, "p-9")
    generation = cache.generation
    cache.put("t2", target(2))  # a write to another job: t1's read is dropped all the same
    cache.remember("t3", target(3), generation)
    assert cache.get("t3") is None
    cache.remember("t3", target(3), cache.generation)  # a fresh read is kept
    assert cache.get("t3") == target(3)


def test_capacity_drops_the_oldest() -> None:
    cache = WebhookTargets(capacity=3)
    for n in range(5):
        cache.remember(f"t{n}", target(n), cache.generation)
    assert len(cache) == 3
    assert [cache.get(f"t{n}") is not None for n in range(5)] == [False, False, True, True, True]
