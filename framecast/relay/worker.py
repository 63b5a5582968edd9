"""The relay worker: runs the jobs of relay-bound endpoints on an upstream fal-protocol server.

It runs inside the API process (relaying is waiting on the network; no GPU, no torch),
claims jobs from the same job table as GPU workers, under the same leases and fencing,
and runs many at once. For each job it:

- submits the validated input upstream once, recording the upstream request in the job
  *before* and *after* the submit (`JobStore.set_upstream`), so a retry after a crash
  resumes the same upstream request. If a crash fell between the two writes, nobody can
  know whether the upstream took the job, and the retry fails instead of submitting a
  second (billed) upstream job;
- mirrors the upstream's status, queue position, logs and progress into our job's log;
- forwards a cancel upstream, and waits for the upstream's answer;
- copies every output file into our storage, so our URLs outlive the upstream's, and adds
  `metadata` saying the relay and the upstream served it;
- maps an upstream error to ours, with the upstream's status code and detail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio.to_thread

from framecast.bindings import ModelBinding
from framecast.engines.names import RelayOptions
from framecast.logs import log_context
from framecast.relay.client import FalQueueClient, UpstreamError, UpstreamRequest
from framecast.store.blobs import BlobStore, blob_reference, unguessable_name
from framecast.store.jobs import (
    ClaimedJob,
    EventInput,
    JobOutcome,
    JobStore,
    WorkerEndpoint,
    WorkerRecord,
    error_outcome,
)
from framecast.worker.identity import make_worker_id

logger = logging.getLogger("framecast.relay")

SUBMITTING = "submitting"
SUBMITTED = "submitted"
HEARTBEAT_S = 2.0
# How long the upstream may stay unreachable before the job fails.
UNREACHABLE_LIMIT_S = 300.0
TEST_FAULT_HEADER = "X-Framecast-Test-Fault"


class RelayWorker:
    def __init__(
        self,
        *,
        store: JobStore,
        blobs: BlobStore,
        bindings: Sequence[ModelBinding],
        lease_s: float,
        cancel_grace_s: float,
        tmp_dir: Path,
        max_concurrent_jobs: int = 64,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.bindings = {binding.endpoint_id: binding for binding in bindings if binding.is_relay}
        self.options = {
            endpoint_id: RelayOptions.model_validate(binding.options) for endpoint_id, binding in self.bindings.items()
        }
        self.lease_s = lease_s
        self.cancel_grace_s = cancel_grace_s
        self.tmp_dir = tmp_dir
        self.max_concurrent_jobs = max_concurrent_jobs
        self.worker_id = make_worker_id()
        self.started_at = time.time()
        self.clients: dict[tuple[str, str, str | None], FalQueueClient] = {}
        self.running: set[asyncio.Task[None]] = set()

    # -- the loop -------------------------------------------------------------------------------

    def endpoint_reports(self) -> dict[str, WorkerEndpoint]:
        """Each relay endpoint is ready unless the key it needs is not in the environment."""
        reports = {}
        for endpoint_id, binding in self.bindings.items():
            key_env = self.options[endpoint_id].key_env
            error = None if os.environ.get(key_env) else f"the upstream key is missing: set {key_env} for the server"
            reports[endpoint_id] = WorkerEndpoint(
                engine=binding.engine,
                weights=self.upstream_name(endpoint_id),
                device="-",
                state="engine_error" if error else "ready",
                error=error,
            )
        return reports

    def upstream_name(self, endpoint_id: str) -> str:
        return f"{self.bindings[endpoint_id].weights}/{self.options[endpoint_id].endpoint or endpoint_id}"

    def report(self) -> tuple[str, ...]:
        reports = self.endpoint_reports()
        claimable = tuple(sorted(endpoint_id for endpoint_id, report in reports.items() if report.state == "ready"))
        self.store.upsert_worker(
            WorkerRecord(
                worker_id=self.worker_id,
                endpoint_ids=claimable,
                state="ready",
                error=None,
                heartbeat_at=time.time(),
                started_at=self.started_at,
                endpoints=reports,
            )
        )
        return claimable

    async def run_forever(self, poll_interval_s: float) -> None:
        """Claim and relay jobs until cancelled; then hand the running ones back to the queue."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        last_report = 0.0
        claimable: tuple[str, ...] = ()
        try:
            while True:
                if time.monotonic() - last_report >= HEARTBEAT_S:
                    claimable = await anyio.to_thread.run_sync(self.report)
                    last_report = time.monotonic()
                while claimable and len(self.running) < self.max_concurrent_jobs:
                    claimed = await anyio.to_thread.run_sync(self.claim, claimable)
                    if claimed is None:
                        break
                    task = asyncio.create_task(self.relay(claimed))
                    self.running.add(task)
                    task.add_done_callback(self.running.discard)
                await asyncio.sleep(poll_interval_s)
        finally:
            for task in list(self.running):
                task.cancel()
            for task in list(self.running):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for client in self.clients.values():
                await client.close()
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self.store.remove_worker, self.worker_id)

    def claim(self, endpoint_ids: tuple[str, ...]) -> ClaimedJob | None:
        return self.store.claim_job(
            worker_id=self.worker_id, endpoint_ids=endpoint_ids, lease_s=self.lease_s, now=time.time()
        )

    def client_for(self, endpoint_id: str) -> FalQueueClient:
        binding, options = self.bindings[endpoint_id], self.options[endpoint_id]
        identity = (binding.weights, options.key_env, options.ca_file)
        if identity not in self.clients:
            self.clients[identity] = FalQueueClient(
                binding.weights, os.environ.get(options.key_env, ""), ca_file=options.ca_file
            )
        return self.clients[identity]

    # -- one job --------------------------------------------------------------------------------

    async def relay(self, claimed: ClaimedJob) -> None:
        job = RelayedJob(self, claimed)
        with log_context(request_id=claimed.record.request_id, worker_id=self.worker_id):
            try:
                await job.run()
            except asyncio.CancelledError:
                # The server is stopping: give the job back; the upstream request is recorded and will be resumed.
                await anyio.to_thread.run_sync(
                    lambda: self.store.release_job(claimed.record.request_id, claimed.lease_token, now=time.time())
                )
                raise
            except Exception as error:
                logger.exception("relay of %s failed", claimed.record.request_id)
                message = f"Framecast relay error: {type(error).__name__}: {error}"
                await job.complete(error_outcome(500, message, "runner_server_error"), level="ERROR", message=message)


class RelayedJob:
    def __init__(self, worker: RelayWorker, claimed: ClaimedJob) -> None:
        self.worker = worker
        self.store = worker.store
        self.record = claimed.record
        self.token = claimed.lease_token
        self.request_id = claimed.record.request_id
        endpoint_id = claimed.record.endpoint_id
        self.binding = worker.bindings[endpoint_id]
        self.options = worker.options[endpoint_id]
        self.upstream_endpoint = self.options.endpoint or endpoint_id
        self.client = worker.client_for(endpoint_id)
        self.state: dict[str, Any] = dict(claimed.record.upstream or {})
        self.events: list[EventInput] = []

    async def _store(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))

    def log(self, message: str, level: str = "INFO", progress: dict[str, Any] | None = None) -> None:
        self.events.append(EventInput(message, level, created_at=time.time(), progress=progress))

    async def flush(self) -> bool:
        """Write pending log lines (fenced). False when the lease is gone."""
        events, self.events = self.events, []
        return bool(await self._store(self.store.append_events, self.request_id, self.token, events))

    async def remember(self, **changes: Any) -> bool:
        self.state.update(changes)
        return bool(await self._store(self.store.set_upstream, self.request_id, self.token, dict(self.state)))

    async def complete(self, outcome: JobOutcome, *, level: str = "INFO", message: str | None = None) -> None:
        if message:
            self.log(message, level)
        events, self.events = self.events, []
        await self._store(self.store.complete_job, self.request_id, self.token, outcome, now=time.time(), events=events)

    async def run(self) -> None:
        upstream = await self.start()
        if upstream is None:
            return
        status = await self.follow(upstream)
        if status is None:
            return
        code, body = await self.client.result(upstream)
        if code == 200:
            outcome = await self.copy_outputs(upstream, body, status)
            await self.complete(outcome, message=f"Upstream request {upstream.request_id} completed; output copied")
        else:
            await self.complete(self.map_error(code, body), level="ERROR", message=f"Upstream answered HTTP {code}")

    async def start(self) -> UpstreamRequest | None:
        """The upstream request: resumed when an earlier attempt recorded one, else submitted once."""
        where = f"{self.binding.weights}/{self.upstream_endpoint}"
        if self.state.get("state") == SUBMITTED:
            upstream = UpstreamRequest(**{name: self.state[name] for name in UpstreamRequest.__dataclass_fields__})
            self.log(f"Resuming upstream request {upstream.request_id} at {where} (attempt {self.record.attempts})")
            return upstream
        if self.state.get("state") == SUBMITTING:
            message = (
                f"An earlier attempt was submitting this request to {where} when it was interrupted, so the upstream "
                "may have it already; not submitting again (a second upstream job would be billed twice)"
            )
            await self.complete(error_outcome(502, message, "upstream_unknown"), level="ERROR", message=message)
            return None
        if not await self.remember(state=SUBMITTING, upstream=where):
            return None
        arguments = {name: value for name, value in self.record.payload["input"].items() if value is not None}
        headers = {TEST_FAULT_HEADER: self.record.test_fault} if self.record.test_fault else {}
        for attempt in range(1, 6):
            try:
                upstream = await self.client.submit(self.upstream_endpoint, arguments, headers=headers)
                break
            except UpstreamError as error:
                if not error.sent and attempt < 5:
                    # Refused before anything was sent: safe to try again.
                    self.log(f"Upstream {where} unreachable ({error}); retrying", "WARN")
                    await asyncio.sleep(2.0 * attempt)
                    continue
                if error.status_code is None:
                    outcome = error_outcome(502, f"Upstream {where}: {error}", "upstream_unreachable")
                else:
                    outcome = self.map_error(error.status_code, error.body)
                await self.complete(outcome, level="ERROR", message=f"Upstream {where} refused the request: {error}")
                return None
        if not await self.remember(state=SUBMITTED, logs_seen=0, **asdict(upstream)):
            return None
        self.log(f"Relayed to {where} as upstream request {upstream.request_id}")
        await self.flush()
        return upstream

    async def follow(self, upstream: UpstreamRequest) -> dict[str, Any] | None:
        """Poll until the upstream request is COMPLETED, mirroring it; None when this worker gave the job up."""
        lease_check_s = self.worker.lease_s / 3
        last_check = 0.0
        cancel_sent_at: float | None = None
        unreachable_since: float | None = None
        last_position: int | None = None
        while True:
            now = time.monotonic()
            if now - last_check >= lease_check_s:
                last_check = now
                lease = await self._store(
                    self.store.renew_lease, self.request_id, self.token, lease_s=self.worker.lease_s, now=time.time()
                )
                if not lease.held:
                    logger.warning("lost the lease on %s; another worker follows it", self.request_id)
                    return None
                if lease.cancel_requested and cancel_sent_at is None:
                    cancel_sent_at = now
                    try:
                        code = await self.client.cancel(upstream)
                        self.log(f"Cancellation sent upstream (HTTP {code})")
                    except UpstreamError as error:
                        self.log(f"Could not send the cancellation upstream: {error}", "WARN")
            if cancel_sent_at is not None and now - cancel_sent_at > self.worker.cancel_grace_s + 30:
                await self.complete(
                    error_outcome(499, "Request was cancelled by the client", "client_cancelled"),
                    level="WARN",
                    message="The upstream did not confirm the cancellation in time; cancelled here",
                )
                return None
            try:
                status = await self.client.status(upstream)
                unreachable_since = None
            except UpstreamError as error:
                unreachable_since = unreachable_since or now
                if now - unreachable_since > UNREACHABLE_LIMIT_S:
                    message = f"The upstream was unreachable for {UNREACHABLE_LIMIT_S:g} s: {error}"
                    await self.complete(error_outcome(502, message, "upstream_unreachable"), level="ERROR")
                    return None
                self.log(f"Upstream status failed ({error}); retrying", "WARN")
                await asyncio.sleep(self.options.poll_interval_s)
                continue
            position = status.get("queue_position")
            if status.get("status") == "IN_QUEUE" and position != last_position:
                self.log(f"Upstream queue position: {position}")
                last_position = position
            await self.mirror_logs(status)
            if not await self.flush():
                return None
            if status.get("status") == "COMPLETED":
                return status
            await asyncio.sleep(self.options.poll_interval_s)

    async def mirror_logs(self, status: dict[str, Any]) -> None:
        logs = status.get("logs") or []
        seen = int(self.state.get("logs_seen", 0))
        if len(logs) <= seen:
            return
        progress = status.get("progress") if status.get("status") == "IN_PROGRESS" else None
        for index, entry in enumerate(logs[seen:], start=seen):
            level = entry.get("level", "INFO") if isinstance(entry, dict) else "INFO"
            text = entry.get("message", "") if isinstance(entry, dict) else str(entry)
            last = index == len(logs) - 1
            self.log(f"Upstream: {text}", level, progress=progress if last else None)
        await self.remember(logs_seen=len(logs))

    async def copy_outputs(self, upstream: UpstreamRequest, body: Any, status: dict[str, Any]) -> JobOutcome:
        """The upstream result with every File's `url` replaced by a copy in our storage."""
        copied = await self._copy_files(body)
        if not isinstance(copied, dict):
            copied = {"output": copied}
        upstream_metadata = copied.get("metadata")
        copied["metadata"] = {
            "engine": "relay",
            "served_by": "relay",
            "model": f"{self.binding.weights}/{self.upstream_endpoint}",
            "upstream_request_id": upstream.request_id,
            **({"upstream": upstream_metadata} if upstream_metadata is not None else {}),
        }
        inference_time = (status.get("metrics") or {}).get("inference_time")
        return JobOutcome(
            200, copied, inference_time_s=inference_time if isinstance(inference_time, int | float) else None
        )

    async def _copy_files(self, value: Any) -> Any:
        if isinstance(value, list):
            return [await self._copy_files(item) for item in value]
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("url"), str) and value["url"].startswith(("https://", "http://")):
            return await self._copy_file(value)
        return {name: await self._copy_files(item) for name, item in value.items()}

    async def _copy_file(self, file: dict[str, Any]) -> dict[str, Any]:
        content_type = str(file.get("content_type") or mimetypes.guess_type(file["url"].split("?")[0])[0] or "")
        extension = (mimetypes.guess_extension(content_type) if content_type else None) or ".bin"
        temporary = self.worker.tmp_dir / f"relay-{unguessable_name(extension)}"
        try:
            size = await self.client.download(file["url"], temporary, max_bytes=self.options.max_output_bytes)
            key = f"outputs/{self.request_id}/{unguessable_name(extension)}"
            await self._store(self.worker.blobs.put_file, key, temporary, content_type or "application/octet-stream")
        finally:
            temporary.unlink(missing_ok=True)
        return {**file, "url": blob_reference(key), "file_size": size}

    def map_error(self, code: int, body: Any) -> JobOutcome:
        """Our outcome for an upstream error: its status code and detail, named as coming from the upstream."""
        detail = body.get("detail") if isinstance(body, dict) else body
        error_type = (body.get("error_type") if isinstance(body, dict) else None) or (
            "client_cancelled" if code == 499 else "upstream_error"
        )
        text = detail if isinstance(detail, str) else f"HTTP {code}"
        message = f"Upstream {self.binding.weights}: {text}"
        return JobOutcome(
            status_code=code,
            body={"detail": detail, "error_type": error_type},
            error=message,
            error_type=error_type,
            headers={"X-Fal-Error-Type": error_type},
        )
