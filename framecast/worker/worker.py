"""The worker: claims jobs for its endpoints, keeps their leases, and drives the engine process.

The worker itself never imports torch. It owns the job's lease: it renews it,
notices cancellation, signals the engine process (SIGUSR1, then SIGKILL after
`cancel_grace_s`), and writes the outcome fenced by the lease token, so a job
that was taken away from it can never get a second result.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framecast.bindings import ModelBinding
from framecast.endpoints import build_catalogue
from framecast.logs import LogFormat, log_context
from framecast.store.blobs import BlobInfo, BlobStore, blob_reference, unguessable_name
from framecast.store.changes import ChangeFeed
from framecast.store.jobs import (
    ClaimedJob,
    DeviceMemory,
    EventInput,
    JobOutcome,
    JobStore,
    WorkerEndpoint,
    WorkerRecord,
    WorkerResources,
    error_outcome,
)
from framecast.store.sql_jobs import CANCELLED_OUTCOME
from framecast.weights import missing_weights_reason
from framecast.worker.engine_process import binding_payload, engine_process_main
from framecast.worker.identity import make_worker_id

logger = logging.getLogger("framecast.worker")

EVENT_FLUSH_S = 0.25
# What a section preview (and a cancelled job's partial output) says about itself.
PREVIEW_FIELDS = ("section", "sections", "num_frames", "placement")
# Queue-to-start latency of an idle worker; a read-only query, so polling this often is cheap.
IDLE_POLL_S = 0.02
# With a change feed that wakes on new jobs (PostgreSQL's NOTIFY) the poll is only a fallback.
NOTIFIED_IDLE_POLL_S = 1.0


class EngineProcessDied(Exception):
    pass


@dataclass(frozen=True)
class WorkerConfig:
    lease_s: float
    cancel_grace_s: float
    poll_interval_s: float
    max_image_pixels: int
    tmp_dir: Path
    torch_threads: int | None = None
    # MODULE:FACTORY of the output safety checker (framecast.engines.safety), loaded by the engine process.
    safety_checker: str | None = None
    # The engine process logs as the worker does (--log-level, --log-format).
    log_level: str = "info"
    log_format: LogFormat = "text"

    @property
    def lease_check_s(self) -> float:
        # Cancel latency is bounded by this, so check far more often than the lease needs.
        return min(self.lease_s / 3, 0.5)


class EngineProcess:
    """The spawned process that owns torch; restarted whenever it dies or is killed."""

    def __init__(
        self,
        bindings: list[ModelBinding],
        max_image_pixels: int,
        torch_threads: int | None,
        safety_checker: str | None = None,
        *,
        log_level: str = "info",
        log_format: LogFormat = "text",
        worker_id: str | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child_connection = context.Pipe()
        self.process = context.Process(
            target=engine_process_main,
            args=(
                child_connection,
                [binding_payload(b) for b in bindings],
                max_image_pixels,
                os.getpid(),
                torch_threads,
                safety_checker,
            ),
            kwargs={"log_level": log_level, "log_format": log_format, "worker_id": worker_id},
            name="framecast-engine",
            daemon=True,
        )
        self.process.start()
        child_connection.close()

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.connection.send(message)
        except (BrokenPipeError, OSError) as error:
            raise EngineProcessDied(self.describe_exit()) from error

    def receive(self, timeout_s: float) -> dict[str, Any] | None:
        """The next message, or None after `timeout_s`. Raises `EngineProcessDied`."""
        try:
            if not self.connection.poll(timeout_s):
                if not self.process.is_alive():
                    raise EngineProcessDied(self.describe_exit())
                return None
            message: dict[str, Any] = self.connection.recv()
            return message
        except (EOFError, OSError) as error:
            self.process.join(timeout=5)
            raise EngineProcessDied(self.describe_exit()) from error

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "The model process stopped answering"
        if code < 0:
            return f"The model process was killed by signal {signal.Signals(-code).name}"
        return f"The model process exited with code {code}"

    def signal_cancel(self) -> None:
        if self.process.pid is not None and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGUSR1)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        self.connection.close()


class Worker:
    def __init__(
        self,
        *,
        store: JobStore,
        blobs: BlobStore,
        bindings: list[ModelBinding],
        config: WorkerConfig,
        change_feed: ChangeFeed | None = None,
    ) -> None:
        """`change_feed` wakes the idle worker when a job arrives; without one (or on SQLite) it polls every 20 ms.
        Closing the feed (as `framecast worker` does on SIGTERM next to setting `stop_event`) ends an idle wait."""
        self.store = store
        self.change_feed = change_feed
        self.blobs = blobs
        self.bindings = bindings
        self.catalogue = build_catalogue()
        self.config = config
        self.worker_id = make_worker_id()
        # Claimable endpoints: all bound ones while loading, then those whose engine loaded.
        self.endpoint_ids = tuple(sorted({binding.endpoint_id for binding in bindings}))
        self.endpoints: dict[str, WorkerEndpoint] = {}
        self.state = "loading"
        self.error: str | None = None
        self.started_at = time.time()
        self.stop_event = threading.Event()
        self.engine: EngineProcess | None = None
        # The engine process's latest GPU memory report, sent with every heartbeat.
        self.resources = WorkerResources()

    # -- lifecycle --------------------------------------------------------------------------------

    def report(self) -> None:
        self.store.upsert_worker(
            WorkerRecord(
                worker_id=self.worker_id,
                endpoint_ids=self.endpoint_ids,
                state=self.state,
                error=self.error,
                heartbeat_at=time.time(),
                started_at=self.started_at,
                endpoints=dict(self.endpoints),
                resources=self.resources,
            )
        )

    def set_endpoint_state(self, binding: ModelBinding, state: str, error: str | None = None) -> None:
        self.endpoints[binding.endpoint_id] = WorkerEndpoint(
            engine=binding.engine, weights=binding.weights, device=binding.device, state=state, error=error
        )

    def heartbeat_forever(self) -> None:
        interval_s = min(2.0, self.config.lease_s / 3)
        with log_context(worker_id=self.worker_id):
            while not self.stop_event.wait(interval_s):
                try:
                    self.report()
                except Exception:
                    logger.exception("worker heartbeat failed; retrying")

    def start_engine(self) -> bool:
        """Start the engine process and wait until its models are loaded.

        Bindings whose weights are not on this machine are reported and skipped
        without starting anything. False when no endpoint could be loaded (state 'error').
        """
        self.state, self.error = "loading", None
        # A new engine process: the old one's memory is gone with it.
        self.resources = WorkerResources()
        usable = []
        for binding in self.bindings:
            reason = missing_weights_reason(binding)
            if reason is None:
                usable.append(binding)
                self.set_endpoint_state(binding, "loading")
            else:
                logger.error("%s: %s", binding.endpoint_id, reason)
                self.set_endpoint_state(binding, "weights_missing", reason)
        self.endpoint_ids = tuple(sorted(binding.endpoint_id for binding in usable))
        self.report()
        if not usable:
            return self.fail_start("no bound endpoint has its weights on this machine")
        self.engine = EngineProcess(
            usable,
            self.config.max_image_pixels,
            self.config.torch_threads,
            self.config.safety_checker,
            log_level=self.config.log_level,
            log_format=self.config.log_format,
            worker_id=self.worker_id,
        )
        while not self.stop_event.is_set():
            try:
                message = self.engine.receive(self.config.poll_interval_s)
            except EngineProcessDied as error:
                for binding in usable:
                    self.set_endpoint_state(binding, "engine_error", str(error))
                return self.fail_start(str(error))
            if message is None:
                continue
            if message["type"] == "log":
                logger.info("%s", message["message"])
                continue
            if message["type"] == "resources":
                self.resources = reported_resources(message)
                continue
            if message["type"] == "ready":
                failures: dict[str, str] = message["failures"]
                for binding in usable:
                    failure = failures.get(binding.endpoint_id)
                    self.set_endpoint_state(binding, "engine_error" if failure else "ready", failure)
                    if failure:
                        logger.error("%s cannot be served: %s", binding.endpoint_id, failure)
                self.endpoint_ids = tuple(sorted(message["endpoints"]))
                if not self.endpoint_ids:
                    return self.fail_start("no engine could be loaded")
                self.state = "ready"
                self.report()
                logger.info("worker %s ready for %s", self.worker_id, ", ".join(self.endpoint_ids))
                return True
        return False

    def fail_start(self, reason: str) -> bool:
        self.state, self.error, self.endpoint_ids = "error", reason, ()
        self.report()
        logger.error("worker %s cannot serve: %s", self.worker_id, reason)
        return False

    def run_forever(self) -> None:
        """Claim and run jobs until `stop_event` is set."""
        with log_context(worker_id=self.worker_id):
            self.serve_jobs()

    def serve_jobs(self) -> None:
        self.config.tmp_dir.mkdir(parents=True, exist_ok=True)
        heartbeat = threading.Thread(target=self.heartbeat_forever, name="worker-heartbeat", daemon=True)
        heartbeat.start()
        try:
            if not self.start_engine():
                # Stay registered with the reason, so submit can say why the endpoint is unavailable.
                self.stop_event.wait()
                return
            while not self.stop_event.is_set():
                if self.engine is not None and not self.engine.process.is_alive():
                    # Died between jobs (e.g. a context-parallel follower rank was lost): restart it before
                    # claiming, so the next job does not fail on a dead process.
                    logger.error("%s; restarting it", self.engine.describe_exit())
                    self.restart_engine()
                    continue
                # Idle workers look often with a cheap read, and take the write lock only to claim.
                if not self.store.has_queued_job(self.endpoint_ids, now=time.time()):
                    if self.change_feed is not None and self.change_feed.wakes_early:
                        self.change_feed.wait_for_jobs(self.endpoint_ids, NOTIFIED_IDLE_POLL_S)
                    else:
                        self.stop_event.wait(IDLE_POLL_S)
                    continue
                claimed = self.store.claim_job(
                    worker_id=self.worker_id,
                    endpoint_ids=self.endpoint_ids,
                    lease_s=self.config.lease_s,
                    now=time.time(),
                )
                if claimed is not None:
                    self.run_claimed(claimed)
        finally:
            self.stop_event.set()
            if self.engine is not None:
                self.engine.kill()
            try:
                self.store.remove_worker(self.worker_id)
            except Exception:
                logger.exception("could not deregister worker %s", self.worker_id)

    # -- one job ----------------------------------------------------------------------------------

    def run_claimed(self, claimed: ClaimedJob) -> None:
        """Run one job; a bug in the worker fails that job (fenced) instead of killing the worker."""
        record = claimed.record
        with log_context(request_id=record.request_id):
            logger.info("running %s for %s (attempt %d)", record.request_id, record.endpoint_id, record.attempts)
            try:
                self.run_job(claimed)
            except Exception as error:
                request_id = claimed.record.request_id
                logger.exception("worker error while running %s", request_id)
                message = f"Framecast worker error: {type(error).__name__}: {error}"
                try:
                    outcome = error_outcome(500, message, "runner_server_error")
                    self.complete(request_id, claimed.lease_token, outcome, [EventInput(message, "ERROR")])
                except Exception:
                    logger.exception("could not record the failure of %s; its lease will expire", request_id)
                # The engine may be mid-job or confused: start from a clean process.
                self.restart_engine()

    def run_job(self, claimed: ClaimedJob) -> None:
        record, token = claimed.record, claimed.lease_token
        request_id = record.request_id
        assert self.engine is not None
        payload = record.payload
        output_path = self.config.tmp_dir / f"{request_id}-{secrets.token_hex(4)}.mp4"
        events: list[EventInput] = [EventInput(note, "WARN") for note in payload.get("notes", [])]
        generation = payload["generation"]
        events.append(
            EventInput(
                f"Generating {generation['num_frames']} frames at {generation['width']}x{generation['height']}, "
                f"{generation['num_inference_steps']} steps, seed {generation['seed']}"
            )
        )
        self.store.append_events(request_id, token, events)
        events = []
        try:
            images = {role: self.blobs.get_bytes(reference["key"]) for role, reference in payload["images"].items()}
            self.engine.send(
                {
                    "type": "run",
                    "endpoint_id": record.endpoint_id,
                    "generation": generation,
                    "images": images,
                    "output_path": str(output_path),
                    "test_fault": record.test_fault,
                    "attempt": record.attempts,
                    # For the engine process's own log lines.
                    "request_id": request_id,
                }
            )
        except EngineProcessDied as error:
            self.finish_after_engine_death(request_id, token, str(error))
            return

        last_flush = last_check = time.monotonic()
        cancel_sent_at: float | None = None
        lease_lost = False
        # The newest section preview rides along in every later progress object.
        latest_preview: dict[str, Any] | None = None
        eta_s: float | None = None
        while True:
            try:
                message = self.engine.receive(self.config.poll_interval_s)
            except EngineProcessDied as error:
                self.store.append_events(request_id, token, events)
                if cancel_sent_at is not None:
                    self.complete(request_id, token, CANCELLED_OUTCOME, [EventInput("Cancelled")])
                    self.restart_engine()
                else:
                    self.finish_after_engine_death(request_id, token, str(error))
                return
            now = time.monotonic()
            if message is not None:
                kind = message["type"]
                if kind == "log":
                    events.append(EventInput(message["message"], message.get("level", "INFO")))
                elif kind == "progress":
                    events.append(progress_event(message, latest_preview))
                    eta_s = float(message["eta_s"])
                elif kind == "preview":
                    event, latest_preview = self.publish_preview(request_id, message, eta_s, discard=lease_lost)
                    events.append(event)
                elif kind == "resources":
                    self.resources = reported_resources(message)
                elif kind in ("done", "failed", "cancelled"):
                    self.store.append_events(request_id, token, events)
                    if lease_lost:
                        output_path.unlink(missing_ok=True)
                        return
                    self.finish(
                        request_id,
                        token,
                        message,
                        cancelled=cancel_sent_at is not None,
                        output_seed=bool(payload.get("output_seed", True)),
                        served_by=self.catalogue[record.endpoint_id].served_by(message.get("engine", "")),
                    )
                    return
            if events and now - last_flush >= EVENT_FLUSH_S:
                if not self.store.append_events(request_id, token, events):
                    lease_lost = True
                events, last_flush = [], now
            if now - last_check >= self.config.lease_check_s:
                last_check = now
                lease = self.store.renew_lease(request_id, token, lease_s=self.config.lease_s, now=time.time())
                if not lease.held and not lease_lost:
                    logger.warning("lost the lease on %s; abandoning it", request_id)
                    lease_lost = True
                if (lease.cancel_requested or lease_lost) and cancel_sent_at is None:
                    self.engine.signal_cancel()
                    cancel_sent_at = now
                if self.stop_event.is_set() and cancel_sent_at is None:
                    # Shutting down: hand the job back untouched, it runs again elsewhere or after restart.
                    self.engine.signal_cancel()
                    cancel_sent_at = now
                    self.store.release_job(request_id, token, now=time.time())
                    lease_lost = True
            if cancel_sent_at is not None and now - cancel_sent_at > self.config.cancel_grace_s:
                self.store.append_events(request_id, token, events)
                self.engine.kill()
                if not lease_lost:
                    note = f"The model did not stop within {self.config.cancel_grace_s:g}s; its process was killed"
                    self.complete(request_id, token, CANCELLED_OUTCOME, [EventInput(note, "WARN")])
                output_path.unlink(missing_ok=True)
                self.restart_engine()
                return

    def store_video(self, request_id: str, path: Path) -> tuple[str, BlobInfo]:
        """Move an MP4 into the blob store under the job's outputs, at an unguessable key."""
        key = f"outputs/{request_id}/{unguessable_name('.mp4')}"
        return key, self.blobs.put_file(key, path, "video/mp4")

    def publish_preview(
        self, request_id: str, message: dict[str, Any], eta_s: float | None, *, discard: bool
    ) -> tuple[EventInput, dict[str, Any] | None]:
        """Store a section's partial MP4: the log line that links it, and the preview for `progress`.

        Both hold a blob reference, which the API renders as a URL.
        """
        path = Path(message["path"])
        summary = f"Section {message['section']}/{message['sections']} done: {message['num_frames']} frames"
        if message["placement"] == "end":
            summary += " (the end of the video: this model renders backwards from the last frame)"
        if eta_s is not None and message["section"] < message["sections"]:
            summary += f", ETA {eta_s:.1f}s"
        if discard:
            path.unlink(missing_ok=True)
            return EventInput(summary), None
        key, _ = self.store_video(request_id, path)
        preview = {"url": blob_reference(key), **{name: message[name] for name in PREVIEW_FIELDS}}
        return EventInput(f"{summary}; preview: {blob_reference(key)}"), preview

    def finish(
        self,
        request_id: str,
        token: str,
        message: dict[str, Any],
        *,
        cancelled: bool,
        output_seed: bool = True,
        served_by: str = "local",
    ) -> None:
        """Write the job's outcome. `output_seed`: the endpoint documents `seed` in its output."""
        kind = message["type"]
        if kind == "cancelled" and message.get("partial"):
            self.finish_partial(request_id, token, message["partial"])
            return
        if kind == "cancelled" or (cancelled and kind != "done"):
            self.complete(request_id, token, CANCELLED_OUTCOME, [EventInput("Cancelled")])
            return
        if kind == "failed":
            outcome = error_outcome(int(message["status_code"]), message["error"], message["error_type"])
            self.complete(request_id, token, outcome, [EventInput(message["error"], "ERROR")])
            return
        key, info = self.store_video(request_id, Path(message["output_path"]))
        body: dict[str, Any] = {"video": video_file(info, f"framecast-{request_id[:8]}.mp4")}
        if output_seed:
            body["seed"] = message["seed"]
        # The seed is always returned: in `metadata` where the documented output has no seed field.
        body["metadata"] = {
            "engine": message["engine"],
            "model": message["model"],
            "seed": message["seed"],
            "render_scale": message["render_scale"],
            # "mapped": a closed endpoint translated onto this local open engine (docs/closed-models.md).
            "served_by": served_by,
        }
        summary = (
            f"Done: {message['num_frames']} frames {message['width']}x{message['height']} at "
            f"{message['frames_per_second']} fps in {message['inference_time_s']:.2f}s "
            f"(+{message['encode_time_s']:.2f}s encode)"
        )
        outcome = JobOutcome(status_code=200, body=body, inference_time_s=float(message["inference_time_s"]))
        if not self.complete(request_id, token, outcome, [EventInput(summary)]):
            # Someone else owns the job now; our copy must not become a second output.
            self.blobs.delete(key)

    def finish_partial(self, request_id: str, token: str, partial: dict[str, Any]) -> None:
        """A cancelled job that had finished sections: cancelled all the same, with those frames attached."""
        key, info = self.store_video(request_id, Path(partial["output_path"]))
        where = "the end of the video" if partial["placement"] == "end" else "the start of the video"
        message = (
            f"Request was cancelled by the client; the {partial['num_frames']} frames finished before the cancel "
            f"({partial['section']} of {partial['sections']} sections, {where}) are kept in partial_output.video"
        )
        outcome = error_outcome(499, message, "client_cancelled")
        outcome.body["partial_output"] = {
            "video": video_file(info, f"framecast-{request_id[:8]}-partial.mp4"),
            **{name: partial[name] for name in PREVIEW_FIELDS},
        }
        if not self.complete(request_id, token, outcome, [EventInput(message, "WARN")]):
            self.blobs.delete(key)

    def complete(self, request_id: str, token: str, outcome: JobOutcome, events: list[EventInput]) -> bool:
        done = self.store.complete_job(request_id, token, outcome, now=time.time(), events=events)
        if not done:
            logger.warning("%s was no longer ours; its outcome was dropped", request_id)
        else:
            logger.info("finished %s: %d %s", request_id, outcome.status_code, outcome.error_type or "ok")
        return done

    def finish_after_engine_death(self, request_id: str, token: str, reason: str) -> None:
        message = f"{reason} while running this request"
        outcome = error_outcome(500, message, "runner_server_error")
        self.complete(request_id, token, outcome, [EventInput(message, "ERROR")])
        self.restart_engine()

    def restart_engine(self) -> None:
        if self.engine is not None:
            self.engine.kill()
        if not self.start_engine():
            self.stop_event.wait()


def video_file(info: BlobInfo, file_name: str) -> dict[str, Any]:
    """A stored MP4 as a fal File object; the URL is a blob reference the API renders."""
    return {
        "url": blob_reference(info.key),
        "content_type": "video/mp4",
        "file_name": file_name,
        "file_size": info.size_bytes,
    }


def reported_resources(message: dict[str, Any]) -> WorkerResources:
    """A `resources` message of the engine process (framecast.worker.engine_process.resources_message)."""
    return WorkerResources(devices=tuple(DeviceMemory(**device) for device in message["devices"]))


def progress_event(message: dict[str, Any], preview: dict[str, Any] | None = None) -> EventInput:
    step, total = int(message["step"]), int(message["total_steps"])
    eta_s = float(message["eta_s"])
    progress: dict[str, Any] = {
        "step": step,
        "total_steps": total,
        "fraction": step / total if total else 0.0,
        "elapsed_s": round(float(message["elapsed_s"]), 3),
        "eta_s": round(eta_s, 3),
    }
    if preview is not None:
        progress["preview"] = preview
    return EventInput(f"Step {step}/{total}, ETA {eta_s:.1f}s", progress=progress)
