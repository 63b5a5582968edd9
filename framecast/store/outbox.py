"""The webhook outbox: one delivery per finished job that asked for a webhook.

Rows are written by the job store in the transaction that finishes the job
(`SqlJobStore._finish`), so a crash can lose neither. Senders (any number of
API replicas) claim due rows with a lease, so each attempt is made by one
sender; a sender that dies mid-attempt loses its claim when the lease runs out
and another sender retries. Times are Unix seconds.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa

from framecast.store.changes import EVENTS_CHANNEL, notify
from framecast.store.database import SqlDatabase, job_events, webhook_deliveries

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass(frozen=True)
class WebhookDelivery:
    id: int
    request_id: str
    url: str
    format: str  # "fal" | "wavespeed"
    created_at: float
    next_attempt_at: float
    attempts: int
    state: str  # pending | delivered | failed (gave up)
    last_status_code: int | None
    last_error: str | None
    finished_at: float | None


@dataclass(frozen=True)
class ClaimedDelivery:
    delivery: WebhookDelivery
    claim_token: str


@dataclass(frozen=True)
class AttemptResult:
    """What one POST gave. `next_attempt_at` None after a failure means: give up."""

    delivered: bool
    status_code: int | None
    error: str | None
    next_attempt_at: float | None
    log_message: str
    log_level: str = "INFO"


class WebhookOutbox(Protocol):
    def claim_due(self, *, now: float, lease_s: float, limit: int) -> list[ClaimedDelivery]:
        """Pending deliveries whose time has come and that no live claim holds, oldest first; each is now ours
        until `now + lease_s`."""
        ...

    def record_attempt(self, delivery_id: int, claim_token: str, result: AttemptResult, *, now: float) -> bool:
        """Fenced by the claim: False (nothing written) when another sender took the delivery over.
        Also appends `result.log_message` to the job's log, in the same transaction."""
        ...

    def list_deliveries(self, request_ids: Sequence[str]) -> list[WebhookDelivery]: ...


class SqlWebhookOutbox:
    def __init__(self, database: SqlDatabase) -> None:
        self.database = database

    def claim_due(self, *, now: float, lease_s: float, limit: int) -> list[ClaimedDelivery]:
        due = (
            sa.select(webhook_deliveries.c.id)
            .where(
                webhook_deliveries.c.state == PENDING,
                webhook_deliveries.c.next_attempt_at <= now,
                sa.or_(webhook_deliveries.c.claimed_until.is_(None), webhook_deliveries.c.claimed_until <= now),
            )
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
            .limit(limit)
        )
        if self.database.is_postgres:
            due = due.with_for_update(skip_locked=True)
        claimed: list[ClaimedDelivery] = []
        with self.database.write() as connection:
            for delivery_id in connection.execute(due).scalars().all():
                token = secrets.token_hex(16)
                connection.execute(
                    webhook_deliveries.update()
                    .where(webhook_deliveries.c.id == delivery_id)
                    .values(claim_token=token, claimed_until=now + lease_s)
                )
                row = (
                    connection.execute(sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id))
                    .mappings()
                    .one()
                )
                claimed.append(ClaimedDelivery(delivery=_to_delivery(row), claim_token=token))
        return claimed

    def record_attempt(self, delivery_id: int, claim_token: str, result: AttemptResult, *, now: float) -> bool:
        if result.delivered:
            state, next_attempt_at, finished_at = DELIVERED, now, now
        elif result.next_attempt_at is None:
            state, next_attempt_at, finished_at = FAILED, now, now
        else:
            state, next_attempt_at, finished_at = PENDING, result.next_attempt_at, None
        with self.database.write() as connection:
            updated = connection.execute(
                webhook_deliveries.update()
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.claim_token == claim_token,
                    webhook_deliveries.c.state == PENDING,
                )
                .values(
                    state=state,
                    attempts=webhook_deliveries.c.attempts + 1,
                    next_attempt_at=next_attempt_at,
                    finished_at=finished_at,
                    last_status_code=result.status_code,
                    last_error=result.error,
                    claim_token=None,
                    claimed_until=None,
                )
                .returning(webhook_deliveries.c.request_id)
            ).first()
            if updated is None:
                return False
            # The attempt's log line is news for the job's status streams.
            notify(connection, EVENTS_CHANNEL, updated.request_id)
            connection.execute(
                job_events.insert().values(
                    request_id=updated.request_id, created_at=now, level=result.log_level, message=result.log_message
                )
            )
        return True

    def list_deliveries(self, request_ids: Sequence[str]) -> list[WebhookDelivery]:
        with self.database.read() as connection:
            rows = connection.execute(
                sa.select(webhook_deliveries)
                .where(webhook_deliveries.c.request_id.in_(list(request_ids)))
                .order_by(webhook_deliveries.c.id)
            ).mappings()
            return [_to_delivery(row) for row in rows]


def _to_delivery(row: sa.RowMapping) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        request_id=row["request_id"],
        url=row["url"],
        format=row["format"],
        created_at=row["created_at"],
        next_attempt_at=row["next_attempt_at"],
        attempts=row["attempts"],
        state=row["state"],
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
        finished_at=row["finished_at"],
    )
