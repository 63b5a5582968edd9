"""The WebhookOutbox contract, with the job store that fills it. PostgreSQL joins it in scale-out."""

from __future__ import annotations

import pytest

from framecast.store.database import SqlDatabase
from framecast.store.jobs import JobOutcome, NewJob
from framecast.store.outbox import AttemptResult, SqlWebhookOutbox, WebhookOutbox
from framecast.store.sql_jobs import SqlJobStore

NOW = 1_000_000.0
HOOK = "https://hooks.example.com/fal?x=1"


@pytest.fixture
def store(database: SqlDatabase) -> SqlJobStore:
    return SqlJobStore(database)


@pytest.fixture
def outbox(database: SqlDatabase) -> WebhookOutbox:
    return SqlWebhookOutbox(database)


def run_to_completion(
    store: SqlJobStore, request_id: str, webhook_url: str | None, webhook_format: str = "fal"
) -> None:
    store.create_job(NewJob(request_id, "fal-ai/wan-i2v", {}, webhook_url=webhook_url, webhook_format=webhook_format))
    claimed = store.claim_job(worker_id="w", endpoint_ids=["fal-ai/wan-i2v"], lease_s=30, now=NOW)
    assert claimed is not None
    assert store.complete_job(request_id, claimed.lease_token, JobOutcome(200, {"ok": True}), now=NOW)


def test_a_finished_job_with_a_webhook_has_one_pending_delivery(store: SqlJobStore, outbox: WebhookOutbox) -> None:
    run_to_completion(store, "with-hook", HOOK, "wavespeed")
    run_to_completion(store, "without-hook", None)
    (delivery,) = outbox.list_deliveries(["with-hook", "without-hook"])
    assert (delivery.request_id, delivery.url, delivery.format, delivery.state, delivery.attempts) == (
        "with-hook",
        HOOK,
        "wavespeed",
        "pending",
        0,
    )


def test_every_way_to_finish_queues_the_webhook(store: SqlJobStore, outbox: WebhookOutbox) -> None:
    store.create_job(NewJob("cancelled", "fal-ai/wan-i2v", {}, webhook_url=HOOK))
    store.request_cancel("cancelled", now=NOW)
    store.create_job(NewJob("late", "fal-ai/wan-i2v", {}, webhook_url=HOOK, start_deadline_at=NOW - 1))
    store.reap(now=NOW, is_worker_alive=lambda _worker: True)
    assert {delivery.request_id for delivery in outbox.list_deliveries(["cancelled", "late"])} == {"cancelled", "late"}


def test_claims_exclude_each_other_until_the_lease_ends(store: SqlJobStore, outbox: WebhookOutbox) -> None:
    run_to_completion(store, "r1", HOOK)
    (first,) = outbox.claim_due(now=NOW, lease_s=60, limit=10)
    assert outbox.claim_due(now=NOW + 30, lease_s=60, limit=10) == [], "a live claim holds"
    (second,) = outbox.claim_due(now=NOW + 61, lease_s=60, limit=10)
    assert second.delivery.id == first.delivery.id and second.claim_token != first.claim_token
    stale = AttemptResult(True, 200, None, None, "late sender")
    assert not outbox.record_attempt(first.delivery.id, first.claim_token, stale, now=NOW + 62), "fenced"


def test_attempts_schedule_retries_deliver_and_give_up(store: SqlJobStore, outbox: WebhookOutbox) -> None:
    run_to_completion(store, "r1", HOOK)
    (claimed,) = outbox.claim_due(now=NOW, lease_s=60, limit=10)
    failure = AttemptResult(False, 503, "HTTP 503", NOW + 15, "attempt 1 failed", "WARN")
    assert outbox.record_attempt(claimed.delivery.id, claimed.claim_token, failure, now=NOW)
    assert outbox.claim_due(now=NOW + 14, lease_s=60, limit=10) == [], "not due before its retry time"
    (retry,) = outbox.claim_due(now=NOW + 15, lease_s=60, limit=10)
    assert retry.delivery.attempts == 1 and retry.delivery.last_error == "HTTP 503"
    success = AttemptResult(True, 200, None, None, "delivered")
    assert outbox.record_attempt(retry.delivery.id, retry.claim_token, success, now=NOW + 16)
    (done,) = outbox.list_deliveries(["r1"])
    assert (done.state, done.attempts, done.finished_at) == ("delivered", 2, NOW + 16)
    assert outbox.claim_due(now=NOW + 10_000, lease_s=60, limit=10) == []
    messages = [(event.level, event.message) for event in store.list_events("r1")][-2:]
    assert messages == [("WARN", "attempt 1 failed"), ("INFO", "delivered")]

    run_to_completion(store, "r2", HOOK)
    (claimed,) = outbox.claim_due(now=NOW, lease_s=60, limit=10)
    give_up = AttemptResult(False, None, "refused", None, "giving up", "ERROR")
    assert outbox.record_attempt(claimed.delivery.id, claimed.claim_token, give_up, now=NOW)
    (failed,) = outbox.list_deliveries(["r2"])
    assert (failed.state, failed.last_error) == ("failed", "refused")
    assert outbox.claim_due(now=NOW + 10_000, lease_s=60, limit=10) == []
