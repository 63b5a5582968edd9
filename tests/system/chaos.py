"""The chaos test: SIGKILL the API and the workers at random moments while jobs run; nothing may be lost or doubled.

The cluster is what a small deployment runs: the API alone (`framecast serve --workers 0`) and `workers`
separate `framecast worker` processes on the same data dir (SQLite), plus a webhook receiver that refuses a
share of deliveries (HTTP 503, drawn from the seed) so that retries happen too. Three things run at once:

- the client (the main thread) submits `jobs` jobs with `?fal_webhook=`, keeping at most `max_outstanding`
  unfinished, polls their status and reads each result once it is COMPLETED. It behaves as a careful client
  must without idempotency keys: a connection refused means "not sent, try again"; a request cut off after it
  was sent (the API died mid-request) is ambiguous, so before sending it again the client looks for the job in
  the key's history (GET /api/requests) by the unique prompt it gave it, and adopts it when it is there.
- the kill loop (a thread) waits a random time drawn from the seed, then SIGKILLs a target and restarts it:
  targets come in shuffled blocks of one API and two worker kills. A worker restarts at once (it loads in
  the background while the other keeps working); the API restarts and the loop waits until it answers.
  Job i is not submitted before floor(i * min_kills / jobs) - 1 kills have happened, so the kills are spread
  over the whole run rather than bunched at its start, and a batch of jobs is always running ahead of the next
  kill; the loop goes on killing until every job is done and at least `min_kills` kills have happened.
- the receiver records every POST and its answer.

When every job is done the kills stop, every process is up again, and the run waits (with a deadline) until the
receiver has accepted a webhook for every job. Then it checks, and `ChaosReport.problems()` lists what failed:

- Lost: every submitted job is COMPLETED with a 200 result holding a video that downloads, with its size.
- Submitted once: the key's history holds exactly one job per client job (no blind resubmission doubled one).
- Duplicated output, precisely: (a) a job's result never changes: every read (after each API restart, and at
  the end) equals the first; (b) the result names one video, under outputs/<request_id>/ in the file store;
  (c) other files there are orphans of killed attempts (a worker SIGKILLed after moving its MP4 into the store,
  before its fenced completion), reported, and allowed only up to the number of worker kills; (d) every
  accepted webhook's payload equals the result, so two deliveries never carry two different outputs.
- Every webhook delivered: the receiver accepted (2xx) at least one signed POST per job, and every POST it
  got verifies against the server's JWKS (fal's Ed25519 scheme, checked independently of the signing code).
  Delivery is at-least-once (docs/webhooks.md): when the API dies after the receiver answered and before the
  outcome was recorded, the next sender repeats the POST. Such repeats are counted and reported
  (`duplicate deliveries`); they carry the same payload, which (d) checks.

Run it: `scripts/chaos-test --help` (this module's `main`); the short tier is tests/system/test_chaos.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import FramecastServer, make_certificates, wait_for
from tests.system.cluster import (
    ENDPOINT,
    WORKER_START_TIMEOUT_S,
    CpuPressure,
    SystemData,
    WorkerProcess,
    build_tiny_models,
    error_kind,
    job_input,
    log_problems,
    prepare_data_dir,
    ready_worker_pids,
    result_path,
    status_path,
    submit_path,
)
from tests.webhook_receiver import WebhookReceiver, verify_fal_webhook

CLIENT_POLL_S = 0.2
# How long a worker kill waits for its target to hold a job, and the span of a job the kill moment is drawn from.
BUSY_WAIT_S = 5.0
JOB_LENGTH_S = 0.8
API = "api"
# Transport errors that prove the request never reached the server: safe to send again as is.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


@dataclass(frozen=True)
class ChaosConfig:
    jobs: int = 100
    seed: int = 1
    workers: int = 2
    # At least this many kills, spread over the jobs; more while jobs are still unfinished.
    min_kills: int = 30
    kill_interval_s: tuple[float, float] = (1.0, 4.0)
    max_outstanding: int = 6
    receiver_failure_rate: float = 0.1
    lease_s: float = 3.0
    # Every job done by then (from the start of the run), and every webhook accepted this long after that.
    timeout_s: float = 720.0
    settle_timeout_s: float = 150.0


@dataclass(frozen=True)
class KillEvent:
    at_s: float
    target: str
    pid: int
    # What the target was doing: the request id a worker was running, "idle", or "serving" for the API.
    doing: str
    jobs_submitted: int
    jobs_done: int
    # A worker kill first waits for its target to be ready and busy; the API's restart is waited for.
    waited_s: float
    restart_s: float


@dataclass
class Job:
    index: int
    prompt: str
    request_id: str | None = None
    # A submit was cut off after it was sent: look in the history before sending it again.
    ambiguous: bool = False
    done: bool = False
    result: dict[str, Any] | None = None
    result_reads: int = 0


@dataclass
class ChaosReport:
    config: ChaosConfig
    kills: list[KillEvent] = field(default_factory=list)
    jobs_submitted: int = 0
    jobs_completed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate_jobs: list[str] = field(default_factory=list)
    changed_results: list[str] = field(default_factory=list)
    output_problems: list[str] = field(default_factory=list)
    orphan_outputs: int = 0
    orphan_inputs: int = 0
    leftover_temp_files: int = 0
    attempts: dict[int, int] = field(default_factory=dict)
    result_reads: int = 0
    client_retries: dict[str, int] = field(default_factory=dict)
    adopted_from_history: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)
    webhook_posts: int = 0
    webhook_refused: int = 0
    webhook_duplicates: int = 0
    webhook_problems: list[str] = field(default_factory=list)
    undelivered: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    jobs_s: float = 0.0
    settle_s: float = 0.0
    run_s: float = 0.0
    command_s: float | None = None
    cpu_pressure_percent: float | None = None

    @property
    def worker_kills(self) -> int:
        return sum(kill.target != API for kill in self.kills)

    @property
    def api_kills(self) -> int:
        return sum(kill.target == API for kill in self.kills)

    def problems(self) -> list[str]:
        """Why the run failed; empty when it passed."""
        found = [f"lost: {item}" for item in self.lost]
        found += [f"submitted twice: {item}" for item in self.duplicate_jobs]
        found += [f"result changed: {item}" for item in self.changed_results]
        found += [f"output: {item}" for item in self.output_problems]
        if self.orphan_outputs > self.worker_kills:
            found.append(f"{self.orphan_outputs} orphan outputs, more than the {self.worker_kills} worker kills")
        found += [f"client: {count} x {kind}" for kind, count in sorted(self.client_errors.items())]
        found += [f"webhook: {item}" for item in self.webhook_problems]
        found += [f"webhook never accepted: {item}" for item in self.undelivered]
        found += [f"log: {line}" for line in self.log_problems[:20]]
        if self.jobs_completed != self.config.jobs:
            found.append(f"{self.jobs_completed} of {self.config.jobs} jobs completed with a video")
        return found

    def render(self) -> str:
        config = self.config
        lines = [
            f"Chaos test: {config.jobs} jobs on {ENDPOINT} (tiny model), API + {config.workers} workers, seed "
            f"{config.seed}; kills every {config.kill_interval_s[0]:g}-{config.kill_interval_s[1]:g} s "
            f"(at least {config.min_kills}), webhook receiver refusing {config.receiver_failure_rate:.0%}",
            "Kill log:",
            "     #    at s  target      pid  submitted  done  waited s  restart s  doing",
        ]
        for number, kill in enumerate(self.kills, 1):
            lines.append(
                f"  {number:4d}  {kill.at_s:6.1f}  {kill.target:<8} {kill.pid:6d}  {kill.jobs_submitted:9d}  "
                f"{kill.jobs_done:4d}  {kill.waited_s:8.1f}  {kill.restart_s:9.1f}  {kill.doing}"
            )
        histogram = ", ".join(f"{count} jobs x {attempts}" for attempts, count in sorted(self.attempts.items()))
        retries = ", ".join(f"{kind}: {count}" for kind, count in sorted(self.client_retries.items())) or "none"
        lines += [
            "Summary:",
            f"  kills: {len(self.kills)} ({self.api_kills} API, {self.worker_kills} worker)",
            f"  jobs: {self.jobs_submitted} submitted, {self.jobs_completed} completed with a video, "
            f"{len(self.lost)} lost, {len(self.duplicate_jobs)} submitted twice",
            f"  attempts per job (starts on a worker): {histogram or '-'}",
            f"  results: {self.result_reads} reads, {len(self.changed_results)} changed; "
            f"{self.orphan_outputs} orphan output files (allowed up to {self.worker_kills}), "
            f"{self.leftover_temp_files} leftover temp files, {self.orphan_inputs} input files of no job",
            f"  webhooks: {self.webhook_posts} POSTs, {self.webhook_refused} refused by the receiver, every job "
            f"accepted: {'yes' if not self.undelivered else 'NO'}, {self.webhook_duplicates} duplicate deliveries "
            "(at-least-once; same payload)",
            f"  client retries while processes were down: {retries}; {self.adopted_from_history} cut-off submits "
            "found in the history",
            "  client errors: "
            + (", ".join(f"{kind}: {count}" for kind, count in sorted(self.client_errors.items())) or "none"),
            f"  time: jobs done after {self.jobs_s:.1f} s, webhooks settled {self.settle_s:.1f} s later, "
            f"run {self.run_s:.1f} s" + (f", whole command {self.command_s:.1f} s" if self.command_s else ""),
        ]
        if self.cpu_pressure_percent is not None:
            lines.append(f"  CPU pressure (some task waiting for a CPU): {self.cpu_pressure_percent:.0f}% of the run")
        lines += [f"  problem: {problem}" for problem in self.problems()[:40]]
        return "\n".join(lines)


class ChaosCluster:
    """The API and the workers as separate processes, each of which can be SIGKILLed and restarted."""

    def __init__(self, base: Path, tiny_models: Path, certificates: tuple[Path, Path, Path], config: ChaosConfig):
        self.data: SystemData = prepare_data_dir(base, tiny_models)
        self.config = config
        lease = ["--lease-s", str(config.lease_s)]
        self.api = FramecastServer(
            data_dir=self.data.data_dir,
            certificates=certificates,
            workers=0,
            extra_arguments=[
                "--models", str(self.data.bindings), *lease,
                "--reaper-interval-s", "0.2",
                # Chaos kills the same job's worker more than the default 3 times now and then; that is not a
                # poison job, so the run allows enough attempts for every job to finish.
                "--max-attempts", "20",
                "--webhook-first-retry-s", "0.5",
                "--webhook-timeout-s", "2",
                "--webhook-max-attempts", "30",
            ],
            log_path=base / "api.log",
        )  # fmt: skip
        self.workers = [
            WorkerProcess(name=f"worker-{slot}", data=self.data, log_path=base / f"worker-{slot}.log",
                          extra_arguments=lease)
            for slot in range(config.workers)
        ]  # fmt: skip

    def start(self) -> None:
        self.api.start()
        for worker in self.workers:
            worker.start()
        self.wait_workers_ready()

    def wait_workers_ready(self) -> None:
        def ready() -> bool:
            return {worker.pid for worker in self.workers} <= ready_worker_pids(self.api.health())

        wait_for(ready, timeout_s=WORKER_START_TIMEOUT_S, interval_s=0.2, what="every worker ready")

    def worker(self, name: str) -> WorkerProcess:
        return next(worker for worker in self.workers if worker.name == name)

    def running_job(self, worker: WorkerProcess) -> str | None:
        """The request id `worker` is running now (read from the job database), or None."""
        database = sqlite3.connect(f"file:{self.data.data_dir / 'framecast.db'}?mode=ro", uri=True, timeout=30)
        try:
            row = database.execute(
                "SELECT request_id FROM jobs WHERE status = 'IN_PROGRESS' AND worker_id LIKE ?",
                (f"%:{worker.pid}:%",),
            ).fetchone()
        finally:
            database.close()
        return None if row is None else str(row[0])

    def kill(self, target: str) -> tuple[int, float]:
        """SIGKILL `target` (API or worker-N) and start it again; (the killed pid, seconds the restart took).

        The API's restart is waited for (until it answers); a worker loads in the background.
        """
        if target == API:
            assert self.api.process is not None
            pid = self.api.process.pid
            self.api.kill()
            started = time.monotonic()
            self.api.start()
            return pid, time.monotonic() - started
        worker = self.worker(target)
        pid = worker.kill()
        started = time.monotonic()
        worker.start()
        return pid, time.monotonic() - started

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.api.stop()

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in [self.api.log_path, *(worker.log_path for worker in self.workers)]
            if path.exists()
        )


class ChaosRun:
    def __init__(self, cluster: ChaosCluster, config: ChaosConfig) -> None:
        self.cluster = cluster
        self.config = config
        self.rng = random.Random(config.seed)
        self.receiver_rng = random.Random(config.seed + 1)
        self.receiver_lock = threading.Lock()
        self.receiver = WebhookReceiver(respond=self.respond)
        self.run_id = uuid.UUID(int=random.Random(config.seed).getrandbits(128)).hex[:8]
        self.jobs = [Job(index, f"chaos {self.run_id} job {index}") for index in range(config.jobs)]
        self.report = ChaosReport(config=config)
        self.retries: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.kill_count = 0
        self.api_generation = 0  # bumped after each API restart: results are read again
        self.stop_killing = threading.Event()
        self.kill_failure: BaseException | None = None
        self.started = time.monotonic()

    def respond(self, _headers: dict[str, str], _body: bytes) -> int:
        with self.receiver_lock:
            return 503 if self.receiver_rng.random() < self.config.receiver_failure_rate else 200

    # -- the run -----------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        report = self.report
        pressure = CpuPressure()
        self.receiver.start()
        killer = threading.Thread(target=self.kill_forever, name="chaos-kills", daemon=True)
        try:
            self.started = time.monotonic()
            killer.start()
            with self.client() as client:
                self.drive(client)
                self.wait_min_kills()
                self.stop_killing.set()
                killer.join(timeout=WORKER_START_TIMEOUT_S)
                report.jobs_s = time.monotonic() - self.started
                if self.kill_failure is not None:
                    raise RuntimeError("the kill loop failed") from self.kill_failure
                self.cluster.wait_workers_ready()
                settle_started = time.monotonic()
                self.wait_webhooks()
                report.settle_s = time.monotonic() - settle_started
                self.audit(client)
        finally:
            self.stop_killing.set()
            self.receiver.stop()
        report.run_s = time.monotonic() - self.started
        report.cpu_pressure_percent = pressure.percent()
        report.client_retries = dict(self.retries)
        report.client_errors = dict(self.errors)
        report.log_problems = log_problems(self.cluster.log_text())
        return report

    def client(self) -> httpx.Client:
        api = self.cluster.api
        assert api.api_key is not None
        return httpx.Client(
            base_url=api.url, verify=str(api.ca_path), timeout=30, headers={"Authorization": f"Key {api.api_key}"}
        )

    def drive(self, client: httpx.Client) -> None:
        """Submit, poll and read results until every job is done, or the deadline (the rest are then lost)."""
        deadline = self.started + self.config.timeout_s
        generation = self.api_generation
        while not all(job.done for job in self.jobs):
            if time.monotonic() > deadline:
                self.report.lost += [
                    f"job {job.index} ({job.request_id}): not done after {self.config.timeout_s:g} s"
                    for job in self.jobs
                    if not job.done
                ]
                return
            if self.kill_failure is not None:
                raise RuntimeError("the kill loop failed") from self.kill_failure
            outstanding = [job for job in self.jobs if job.request_id is not None and not job.done]
            for job in self.jobs:
                if job.request_id is not None:
                    continue
                if len(outstanding) >= self.config.max_outstanding or not self.may_submit(job.index):
                    break
                if not self.submit(client, job):
                    break
                outstanding.append(job)
            for job in outstanding:
                if not self.poll(client, job):
                    break  # the API is down: try again next round
            if generation != self.api_generation:
                generation = self.api_generation
                for job in self.jobs:
                    if job.result is not None:
                        self.read_result(client, job)
            time.sleep(CLIENT_POLL_S)

    def may_submit(self, index: int) -> bool:
        """Job i waits for floor(i * min_kills / jobs) - 1 kills: one batch of jobs runs ahead of each kill."""
        return self.kill_count >= math.floor(index * self.config.min_kills / self.config.jobs) - 1

    def wait_min_kills(self) -> None:
        """After the last job: the kills still owed (they hit idle workers, the API and its webhook sender)."""
        wait_for(
            lambda: self.kill_count >= self.config.min_kills or self.kill_failure is not None,
            timeout_s=max(self.started + self.config.timeout_s - time.monotonic(), 1.0),
            interval_s=0.1,
            what=f"{self.config.min_kills} kills",
        )

    # -- client calls ------------------------------------------------------------------------------

    def submit(self, client: httpx.Client, job: Job) -> bool:
        """True when the job is now on the server (sent, or found in the history)."""
        if job.ambiguous:
            found = self.find_in_history(client, job)
            if found is None:
                return False  # the API is still down: ask again later
            if found:
                job.request_id, job.ambiguous = found, False
                self.report.adopted_from_history += 1
                self.report.jobs_submitted += 1
                return True
            job.ambiguous = False
        try:
            response = client.post(
                submit_path(),
                params={"fal_webhook": self.receiver.url},
                json=job_input(job.prompt, seed=job.index),
            )
        except NOT_SENT as error:
            self.retries[error_kind("submit", error)] += 1
            return False
        except httpx.TransportError as error:
            self.retries[error_kind("submit", error) + " (cut off)"] += 1
            job.ambiguous = True
            return False
        if response.status_code == 503:
            # No live worker for a moment (both were killed): the server refuses rather than queue a job no one runs.
            self.retries[error_kind("submit", response)] += 1
            return False
        if response.status_code != 200:
            self.errors[error_kind("submit", response)] += 1
            return False
        job.request_id = response.json()["request_id"]
        self.report.jobs_submitted += 1
        return True

    def find_in_history(self, client: httpx.Client, job: Job) -> str | None:
        """The request id of the job with this prompt, '' when there is none, None when the API does not answer."""
        try:
            response = client.get("/api/requests", params={"limit": 500})
        except httpx.TransportError as error:
            self.retries[error_kind("history", error)] += 1
            return None
        if response.status_code != 200:
            self.errors[error_kind("history", response)] += 1
            return None
        matches = [
            entry["request_id"] for entry in response.json()["requests"] if entry["input"]["prompt"] == job.prompt
        ]
        return matches[0] if matches else ""

    def poll(self, client: httpx.Client, job: Job) -> bool:
        """Poll the job's status; read its result once COMPLETED. False when the API did not answer."""
        assert job.request_id is not None
        try:
            response = client.get(status_path(job.request_id), params={"logs": "0"})
        except httpx.TransportError as error:
            self.retries[error_kind("status", error)] += 1
            return False
        if response.status_code not in (200, 202):
            self.errors[error_kind("status", response)] += 1
            return True
        if response.json()["status"] == "COMPLETED" and self.read_result(client, job):
            job.done = True
        return True

    def read_result(self, client: httpx.Client, job: Job) -> bool:
        """Read the result; the first read is kept, later ones must equal it. False when the API did not answer."""
        assert job.request_id is not None
        try:
            response = client.get(result_path(job.request_id))
        except httpx.TransportError as error:
            self.retries[error_kind("result", error)] += 1
            return False
        job.result_reads += 1
        body = response.json()
        if response.status_code != 200:
            if job.result is None:
                self.report.lost.append(f"{job.request_id}: HTTP {response.status_code} {body}")
                job.result = body
            else:
                self.report.changed_results.append(f"{job.request_id}: now HTTP {response.status_code}")
            return True
        if job.result is None:
            job.result = body
        elif body != job.result:
            self.report.changed_results.append(f"{job.request_id}: {job.result} then {body}")
        return True

    # -- kills -------------------------------------------------------------------------------------

    def kill_forever(self) -> None:
        targets: list[str] = []
        try:
            while not self.stop_killing.wait(self.rng.uniform(*self.config.kill_interval_s)):
                if not targets:
                    workers = [worker.name for worker in self.cluster.workers]
                    targets = [API, self.rng.choice(workers), self.rng.choice(workers)]
                    self.rng.shuffle(targets)
                target = targets.pop()
                waiting = time.monotonic()
                doing = "serving" if target == API else self.wait_busy(self.cluster.worker(target))
                waited_s = time.monotonic() - waiting
                if self.stop_killing.is_set():
                    return
                at_s = time.monotonic() - self.started
                submitted = sum(job.request_id is not None for job in self.jobs)
                done = sum(job.done for job in self.jobs)
                pid, restart_s = self.cluster.kill(target)
                self.report.kills.append(KillEvent(at_s, target, pid, doing, submitted, done, waited_s, restart_s))
                self.kill_count += 1
                if target == API:
                    self.api_generation += 1
        except BaseException as error:
            self.kill_failure = error

    def wait_busy(self, worker: WorkerProcess) -> str:
        """Pick the moment to kill a worker: once it is ready and has claimed a job, a random time into that job.

        A worker killed while it loads does no work at all; killed between jobs it loses none. So the kill waits
        (up to BUSY_WAIT_S, and only while some job is unfinished) for the worker to hold a job, then a random
        share of a job's length (drawn from the seed). Returns the request id it was running at the kill (as far
        as the database said), or "idle".
        """
        api = self.cluster.api
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while worker.pid not in ready_worker_pids(api.health()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{worker.name} (pid {worker.pid}) not ready after {WORKER_START_TIMEOUT_S:g} s")
            if self.stop_killing.wait(0.1):
                return "idle"
        deadline = time.monotonic() + BUSY_WAIT_S
        while (request_id := self.cluster.running_job(worker)) is None:
            unfinished = any(job.request_id is not None and not job.done for job in self.jobs)
            if not unfinished or time.monotonic() > deadline or self.stop_killing.wait(0.02):
                return "idle"
        self.stop_killing.wait(self.rng.uniform(0, JOB_LENGTH_S))
        return self.cluster.running_job(worker) or f"idle (just finished {request_id})"

    # -- the end -----------------------------------------------------------------------------------

    def accepted(self) -> dict[str, list[dict[str, Any]]]:
        """Request id -> the bodies of the POSTs the receiver accepted."""
        bodies: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for webhook in list(self.receiver.received):
            if 200 <= webhook.status_code < 300:
                bodies[webhook.headers.get("x-fal-webhook-request-id", "")].append(webhook.json())
        return bodies

    def wait_webhooks(self) -> None:
        wanted = {job.request_id for job in self.jobs if job.request_id is not None}
        # Past the deadline the audit names the jobs whose webhook never came.
        with contextlib.suppress(TimeoutError):
            wait_for(
                lambda: wanted <= set(self.accepted()),
                timeout_s=self.config.settle_timeout_s,
                interval_s=0.2,
                what="a webhook accepted for every job",
            )

    def audit(self, client: httpx.Client) -> None:
        report = self.report
        jobs = {job.request_id: job for job in self.jobs if job.request_id is not None}
        report.result_reads = sum(job.result_reads for job in self.jobs)
        # Submitted once: one server job per client job, and nothing else.
        history = client.get("/api/requests", params={"limit": 500}).json()["requests"]
        by_prompt = collections.Counter(entry["input"]["prompt"] for entry in history)
        for job in self.jobs:
            if by_prompt[job.prompt] != 1:
                report.duplicate_jobs.append(f"{job.prompt!r} is {by_prompt[job.prompt]} jobs on the server")
        unknown = [entry["request_id"] for entry in history if entry["request_id"] not in jobs]
        report.duplicate_jobs += [f"{request_id}: a job the client never made" for request_id in unknown]
        # Lost / changed results: read everything once more, and download each video.
        files_root = self.cluster.data.data_dir / "files"
        for request_id, job in jobs.items():
            self.read_result(client, job)
            video = (job.result or {}).get("video") or {}
            if not video.get("url"):
                if not any(item.startswith(request_id) for item in report.lost):
                    report.lost.append(f"{request_id}: result without a video: {job.result}")
                continue
            download = client.get(video["url"])
            if download.status_code != 200 or len(download.content) != video.get("file_size"):
                report.lost.append(f"{request_id}: video download HTTP {download.status_code}")
                continue
            report.jobs_completed += 1
            key = video["url"].split("/files/", 1)[1].split("?", 1)[0]
            outputs = sorted(path.relative_to(files_root).as_posix() for path in self.output_files(request_id))
            if key not in outputs:
                report.output_problems.append(f"{request_id}: the result's video {key} is not in the store")
            report.orphan_outputs += len([name for name in outputs if name != key])
        strangers = {path.name for path in (files_root / "outputs").glob("*")} - set(jobs)
        report.output_problems += [f"outputs/{name}: outputs of no client job" for name in sorted(strangers)]
        # A submit cut off between storing its image and inserting its job leaves the image behind.
        report.orphan_inputs = len({path.name for path in (files_root / "inputs").glob("*")} - set(jobs))
        tmp = self.cluster.data.data_dir / "tmp"
        report.leftover_temp_files = sum(1 for path in tmp.rglob("*") if path.is_file()) if tmp.exists() else 0
        # Attempts, from the job logs.
        attempts: collections.Counter[int] = collections.Counter()
        for request_id in jobs:
            logs = client.get(status_path(request_id), params={"logs": "1"}).json()["logs"] or []
            attempts[sum(entry["message"].startswith("Started on worker") for entry in logs)] += 1
        report.attempts = dict(attempts)
        self.audit_webhooks(client, jobs)

    def output_files(self, request_id: str) -> list[Path]:
        directory = self.cluster.data.data_dir / "files" / "outputs" / request_id
        return [path for path in directory.rglob("*") if path.is_file()] if directory.exists() else []

    def audit_webhooks(self, client: httpx.Client, jobs: dict[str, Job]) -> None:
        report = self.report
        jwks = client.get("/.well-known/jwks.json").json()
        received = list(self.receiver.received)
        report.webhook_posts = len(received)
        report.webhook_refused = sum(not 200 <= webhook.status_code < 300 for webhook in received)
        for webhook in received:
            if not verify_fal_webhook(webhook.headers, webhook.body, jwks, now=webhook.received_at):
                report.webhook_problems.append(f"bad signature: {webhook.headers}")
        accepted = self.accepted()
        for request_id, bodies in accepted.items():
            job = jobs.get(request_id)
            if job is None:
                report.webhook_problems.append(f"{request_id}: a webhook for a job the client never made")
                continue
            report.webhook_duplicates += len(bodies) - 1
            for body in bodies:
                if body.get("status") != "OK" or body.get("payload") != job.result:
                    report.webhook_problems.append(f"{request_id}: payload differs from the result: {body}")
        report.undelivered = sorted(set(jobs) - set(accepted))


def run_chaos(base: Path, tiny_models: Path, certificates: tuple[Path, Path, Path], config: ChaosConfig) -> ChaosReport:
    """Start the cluster under `base`, run the chaos, stop everything; the report says what happened."""
    cluster = ChaosCluster(base, tiny_models, certificates, config)
    try:
        cluster.start()
        return ChaosRun(cluster, config).run()
    finally:
        cluster.stop()


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(
        prog="scripts/chaos-test",
        description="Run the API (`framecast serve --workers 0`), --workers `framecast worker` processes and a "
        "webhook receiver; submit --jobs jobs with webhooks while SIGKILLing the API or a worker at random moments "
        "(and restarting it); then check that no job was lost or doubled and every webhook was delivered. Prints "
        "the kill log and a summary; exits 1 on any failure (docs/reliability.md).",
    )
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="kill targets and moments, receiver refusals")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--min-kills", type=int, default=defaults.min_kills)
    parser.add_argument(
        "--kill-interval-s", type=float, nargs=2, default=defaults.kill_interval_s, metavar=("MIN", "MAX")
    )
    parser.add_argument("--max-outstanding", type=int, default=defaults.max_outstanding)
    parser.add_argument("--receiver-failure-rate", type=float, default=defaults.receiver_failure_rate)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    parser.add_argument("--tiny-models", type=Path, help="reuse tiny models built by `framecast dev tiny-models`")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data dir and logs)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    config = ChaosConfig(
        jobs=arguments.jobs,
        seed=arguments.seed,
        workers=arguments.workers,
        min_kills=arguments.min_kills,
        kill_interval_s=tuple(arguments.kill_interval_s),
        max_outstanding=arguments.max_outstanding,
        receiver_failure_rate=arguments.receiver_failure_rate,
        timeout_s=arguments.timeout_s,
    )
    command_started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="framecast-chaos-"))
    print(f"chaos test: working in {base}", flush=True)
    tiny_models = arguments.tiny_models or build_tiny_models(base / "tiny")
    report = run_chaos(base / "run", tiny_models, make_certificates(base / "certs"), config)
    report.command_s = time.monotonic() - command_started
    print(report.render(), flush=True)
    if arguments.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    problems = report.problems()
    print(
        f"FAIL: {len(problems)} problems" if problems else "PASS: no job lost or doubled, every webhook delivered",
        flush=True,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
