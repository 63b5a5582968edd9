"""The job store contract: the jobs table is the queue.

Queue semantics live here and in `framecast.service`; nothing in this module
knows HTTP. Every write a worker makes is fenced by the lease token it got at
claim time, so a worker whose lease was taken away can never write a result.
Times are Unix seconds (float).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


class JobStatus(enum.StrEnum):
    """fal's three wire statuses. A failed or cancelled job is COMPLETED with an error."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


class Priority(enum.IntEnum):
    """`X-Fal-Queue-Priority`; higher runs first."""

    LOW = 0
    NORMAL = 1


class CancelOutcome(enum.StrEnum):
    CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True)
class NewJob:
    request_id: str
    endpoint_id: str
    payload: dict[str, Any]
    priority: Priority = Priority.NORMAL
    start_deadline_at: float | None = None
    base_url: str | None = None
    webhook_url: str | None = None
    # "fal" (Ed25519-signed fal payload) or "wavespeed" (HMAC-signed task object).
    webhook_format: str = "fal"
    test_fault: str | None = None
    max_attempts: int = 3
    # The API key id that submitted it (None without keys).
    submitted_by: str | None = None


@dataclass(frozen=True)
class JobOutcome:
    """The terminal state of a job: the result endpoint answers `status_code` with `body`."""

    status_code: int
    body: Any
    error: str | None = None
    error_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    inference_time_s: float | None = None


def error_outcome(
    status_code: int, message: str, error_type: str, *, headers: dict[str, str] | None = None
) -> JobOutcome:
    """A failure in fal's shape: `{"detail", "error_type"}` plus the `X-Fal-Error-Type` header."""
    return JobOutcome(
        status_code=status_code,
        body={"detail": message, "error_type": error_type},
        error=message,
        error_type=error_type,
        headers={"X-Fal-Error-Type": error_type, **(headers or {})},
    )


@dataclass(frozen=True)
class JobRecord:
    request_id: str
    seq: int
    endpoint_id: str
    status: JobStatus
    priority: Priority
    payload: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    start_deadline_at: float | None
    attempts: int
    max_attempts: int
    worker_id: str | None
    cancel_requested_at: float | None
    base_url: str | None
    webhook_url: str | None
    webhook_format: str | None
    test_fault: str | None
    outcome: JobOutcome | None
    progress: dict[str, Any] | None
    # Relayed jobs: where the job lives upstream ({"state", "request_id", "status_url", ...}).
    upstream: dict[str, Any] | None = None
    submitted_by: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.status is JobStatus.COMPLETED


@dataclass(frozen=True)
class ClaimedJob:
    record: JobRecord
    lease_token: str


@dataclass(frozen=True)
class LeaseState:
    """What a heartbeat learns: whether the lease is still ours, and whether cancel was asked."""

    held: bool
    cancel_requested: bool


@dataclass(frozen=True)
class EventInput:
    message: str
    level: str = "INFO"
    created_at: float | None = None
    # Structured progress ({"step", "total_steps", "eta_s", ...}); also kept on the job row.
    progress: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobEvent:
    id: int
    request_id: str
    created_at: float
    level: str
    message: str


@dataclass(frozen=True)
class ReapReport:
    requeued: Sequence[str] = ()
    failed: Sequence[str] = ()
    expired: Sequence[str] = ()
    cancelled: Sequence[str] = ()


@dataclass(frozen=True)
class WorkerRecord:
    worker_id: str
    # The endpoints it claims jobs for: those whose engine loaded (all of them while loading).
    endpoint_ids: tuple[str, ...]
    state: str  # "loading" | "ready" | "error"
    error: str | None
    heartbeat_at: float
    started_at: float
    # Every endpoint bound on this worker, with its engine, weights and state.
    endpoints: Mapping[str, WorkerEndpoint] = field(default_factory=dict)
    # The GPU memory its engine process last reported (after loading, after each job).
    resources: WorkerResources = field(default_factory=lambda: WorkerResources())


@dataclass(frozen=True)
class WorkerEndpoint:
    """One binding as a worker reports it."""

    engine: str
    weights: str
    device: str
    state: str  # "loading" | "ready" | "weights_missing" | "engine_error"
    error: str | None = None


@dataclass(frozen=True)
class DeviceMemory:
    """One accelerator's memory as torch's caching allocator saw it in the engine process, in bytes."""

    device: str  # "cuda:0": the index as the engine process sees it (after CUDA_VISIBLE_DEVICES)
    allocated_bytes: int  # held by live tensors
    reserved_bytes: int  # held by the allocator's cache (what nvidia-smi counts for the process, less the context)
    total_bytes: int  # the device's whole memory


@dataclass(frozen=True)
class WorkerResources:
    """What a worker's engine process last reported of its devices: empty on CPU, or before the first report."""

    devices: tuple[DeviceMemory, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"devices": [asdict(device) for device in self.devices]})

    @classmethod
    def from_json(cls, text: str | None) -> WorkerResources:
        """Parses what `to_json` wrote; None (a row from before schema version 6) is no report."""
        if not text:
            return cls()
        return cls(devices=tuple(DeviceMemory(**device) for device in json.loads(text).get("devices", [])))


# Tells the reaper whether a worker is known to be dead without waiting for its
# lease: True = alive or unknown, False = certainly gone (same host, no such pid).
WorkerLiveness = Callable[[str], bool]


class JobStore(Protocol):
    """Durable job queue. All methods are safe to call from several processes at once."""

    def create_job(self, job: NewJob) -> JobRecord:
        """Insert a job IN_QUEUE. Raises `KeyError` if the request id exists."""
        ...

    def get_job(self, request_id: str) -> JobRecord | None: ...

    def list_jobs(self, *, submitted_by: str | None, limit: int) -> list[JobRecord]:
        """The newest `limit` jobs, newest first: those of one API key, or every job when `submitted_by` is None."""
        ...

    def queue_position(self, record: JobRecord) -> int:
        """Jobs of the same endpoint that will be claimed before this one (0 = next)."""
        ...

    def list_events(self, request_id: str, *, after_id: int = 0, limit: int = 1000) -> list[JobEvent]:
        """Events in id order; with `limit`, the newest `limit` after `after_id`."""
        ...

    def request_cancel(self, request_id: str, *, now: float) -> CancelOutcome:
        """Idempotent. A queued job becomes COMPLETED (client_cancelled) at once; a running one is flagged."""
        ...

    def claim_job(
        self, *, worker_id: str, endpoint_ids: Sequence[str], lease_s: float, now: float
    ) -> ClaimedJob | None:
        """Atomically take the best queued job (priority, then age) among `endpoint_ids`."""
        ...

    def has_queued_job(self, endpoint_ids: Sequence[str], *, now: float) -> bool:
        """A cheap read: is any job claimable among `endpoint_ids`? Lets idle workers poll often without writing."""
        ...

    def renew_lease(self, request_id: str, lease_token: str, *, lease_s: float, now: float) -> LeaseState: ...

    def append_events(self, request_id: str, lease_token: str, events: Sequence[EventInput]) -> bool:
        """Fenced. Returns False (writes nothing) when the lease is no longer held."""
        ...

    def set_upstream(self, request_id: str, lease_token: str, upstream: dict[str, Any]) -> bool:
        """Fenced: record where a relayed job lives upstream. False (nothing written) when the lease was lost.

        Survives requeueing, so the next attempt resumes the upstream request instead of submitting again.
        """
        ...

    def complete_job(
        self, request_id: str, lease_token: str, outcome: JobOutcome, *, now: float, events: Sequence[EventInput] = ()
    ) -> bool:
        """Fenced, one transaction: the outcome and its last events. False when the lease was lost."""
        ...

    def release_job(self, request_id: str, lease_token: str, *, now: float) -> bool:
        """Fenced: give a claimed job back to the queue (worker shutting down) without counting an attempt."""
        ...

    def reap(self, *, now: float, is_worker_alive: WorkerLiveness) -> ReapReport:
        """Requeue jobs of dead workers, fail those out of attempts, expire missed start deadlines."""
        ...

    def upsert_worker(self, worker: WorkerRecord) -> None: ...

    def list_workers(self, *, alive_after: float) -> list[WorkerRecord]: ...

    def remove_worker(self, worker_id: str) -> None: ...

    def close(self) -> None: ...
