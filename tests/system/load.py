"""The load test: many clients submit jobs while many pollers poll status; every job must complete, without errors.

`LoadRun` drives a running server with plain `httpx.AsyncClient`s (fal-client's transport), one per simulated
client and one per poller, each with one keep-alive TLS connection (separate clients, as separate programs
would be; one shared pool would also make the client's own CPU the bottleneck, see bench/README.md):

- `clients` clients share the `jobs` submissions (POST /queue/fal-ai/wan-i2v, as fast as the server answers);
  afterwards each fetches results as jobs complete: GET the result, then download its video.
- `pollers` pollers each offer `poll_hz` status calls per second (GET .../status?logs=0), one at a time,
  starting at random offsets; a call that takes longer than the period is followed at once by the next (no
  catch-up bursts). They take the unfinished jobs in turn, so every job is polled until a poll sees
  COMPLETED. The latency of every answered status call is kept.

Errors are counted by kind (`status: HTTP 500`, `submit: ReadTimeout`, `job failed: ...`, `lost: ...`); the
run passes only with zero errors and every job completed with a video that downloads. Timings are reported,
never judged: the tests assert only correctness.

Run it: `scripts/load-test --help` (this module's `main`); the short tier is tests/system/test_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import shutil
import ssl
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from tests.e2e.server import FramecastServer, make_certificates
from tests.system.cluster import (
    ENDPOINT,
    NO_SAMPLES,
    RENDER_SCALE,
    CpuPressure,
    Latency,
    build_tiny_models,
    error_kind,
    job_input,
    log_problems,
    prepare_data_dir,
    result_path,
    status_path,
    submit_path,
    tree_cpu_s,
)

PENDING_STATUSES = ("IN_QUEUE", "IN_PROGRESS")
# Workers for 2 cores. The pollers keep the API busy whatever it costs per call, so the CPU is shared among the
# busy threads: the API's, the load client's and one per engine process. With three engines the jobs get 3/5 of
# the machine rather than 1/2, which keeps 1,000 jobs within 15 minutes when something else also needs the CPU.
WORKERS = 3


@dataclass(frozen=True)
class LoadConfig:
    jobs: int = 1000
    clients: int = 50
    pollers: int = 200
    poll_hz: float = 10.0
    seed: int = 0
    # Every job must be done (result fetched, video downloaded) this long after the run starts: with the tiny
    # models' build and the server's start, the whole command stays under 15 minutes.
    timeout_s: float = 800.0
    request_timeout_s: float = 60.0


@dataclass
class LoadReport:
    config: LoadConfig
    submitted: int = 0
    completed: int = 0
    failed_jobs: list[str] = field(default_factory=list)
    not_finished: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    status_calls: int = 0
    status_latency: Latency = NO_SAMPLES
    submit_latency: Latency = NO_SAMPLES
    result_latency: Latency = NO_SAMPLES
    download_latency: Latency = NO_SAMPLES
    # Run start -> all submitted; first submit -> last completion seen; the whole run.
    submit_all_s: float = 0.0
    completion_s: float = 0.0
    run_s: float = 0.0
    # Filled by `main`: server start, whole command, CPU seconds by role, log lines with errors.
    server_start_s: float | None = None
    command_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_percent: float | None = None
    cpu_pressure_percent: float | None = None
    server_log_problems: list[str] = field(default_factory=list)

    @property
    def status_rate_per_s(self) -> float:
        return self.status_calls / self.run_s if self.run_s else 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.completed / self.completion_s if self.completion_s else 0.0

    def problems(self) -> list[str]:
        """Why the run failed; empty when it passed (zero errors, every job completed, a clean server log)."""
        found = [f"{count} x {kind}" for kind, count in sorted(self.errors.items())]
        if self.completed != self.config.jobs:
            found.append(f"{self.completed} of {self.config.jobs} jobs completed with a video")
        found += [f"server log: {line}" for line in self.server_log_problems[:20]]
        return found

    def render(self) -> str:
        config = self.config
        offered = config.pollers * config.poll_hz
        lines = [
            f"Load test: {config.jobs} jobs from {config.clients} clients; {config.pollers} pollers at "
            f"{config.poll_hz:g} Hz (offered {offered:.0f} status calls/s); {ENDPOINT} on the tiny model at "
            f"1/{1 / RENDER_SCALE:.0f} scale, 81 frames, 1 step",
            f"  jobs: {self.submitted} submitted, {self.completed} completed with a video, "
            f"{len(self.failed_jobs)} failed, {self.not_finished} not finished",
            "  errors: " + (", ".join(f"{kind}: {count}" for kind, count in sorted(self.errors.items())) or "none"),
            f"  status calls: {self.status_calls} ({self.status_rate_per_s:.0f}/s achieved of {offered:.0f}/s "
            f"offered, over {self.run_s:.1f} s)",
            f"  status latency:   {self.status_latency}",
            f"  submit latency:   {self.submit_latency}",
            f"  result latency:   {self.result_latency}",
            f"  video download:   {self.download_latency}",
            f"  throughput: {self.jobs_per_s:.2f} jobs/s (first submit to last completion {self.completion_s:.1f} s); "
            f"all {self.submitted} submitted after {self.submit_all_s:.1f} s",
            f"  run: {self.run_s:.1f} s",
        ]
        if self.server_start_s is not None:
            lines.append(f"  server start: {self.server_start_s:.1f} s")
        if self.command_s is not None:
            lines.append(f"  wall time, whole command: {self.command_s:.1f} s")
        if self.cpu_s:
            shares = ", ".join(f"{role} {seconds:.0f}" for role, seconds in self.cpu_s.items())
            busy = "" if self.machine_busy_percent is None else f"; machine busy {self.machine_busy_percent:.0f}%"
            if self.cpu_pressure_percent is not None:
                busy += f", CPU pressure (some task waiting for a CPU) {self.cpu_pressure_percent:.0f}% of the time"
            lines.append(f"  CPU seconds during the run: {shares}{busy}")
        for failure in self.failed_jobs[:10]:
            lines.append(f"  failed job: {failure}")
        for line in self.server_log_problems[:10]:
            lines.append(f"  server log: {line}")
        return "\n".join(lines)


class LoadRun:
    """One load run against a running server. Not reusable: make a new one per run."""

    def __init__(self, *, base_url: str, api_key: str | None, ca_path: Path, config: LoadConfig) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Key {api_key}"} if api_key else {}
        self.ssl_context = ssl.create_default_context(cafile=str(ca_path))
        self.config = config
        self.rng = random.Random(config.seed)
        self.report = LoadReport(config=config)
        self.errors: collections.Counter[str] = collections.Counter()
        self.next_job = 0
        # Unfinished jobs, taken in turn by the pollers; a job being polled is out of the deque meanwhile.
        self.pending: collections.deque[str] = collections.deque()
        self.completed_queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.settled = 0  # jobs that are done with: result checked, or submit failed
        self.all_settled = asyncio.Event()
        self.status_latencies: list[float] = []
        self.submit_latencies: list[float] = []
        self.result_latencies: list[float] = []
        self.download_latencies: list[float] = []
        self.first_submit_at: float | None = None
        self.last_completion_at: float | None = None

    def new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            verify=self.ssl_context,
            headers=self.headers,
            timeout=self.config.request_timeout_s,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def settle(self) -> None:
        self.settled += 1
        if self.settled >= self.config.jobs:
            self.all_settled.set()

    async def run(self) -> LoadReport:
        started = time.perf_counter()
        tasks = [asyncio.create_task(self.poll_forever()) for _ in range(self.config.pollers)]
        tasks += [asyncio.create_task(self.client(started)) for _ in range(self.config.clients)]
        try:
            await asyncio.wait_for(self.all_settled.wait(), self.config.timeout_s)
        except TimeoutError:
            unfinished = self.config.jobs - self.settled
            self.report.not_finished = unfinished
            self.errors[f"lost: not finished within {self.config.timeout_s:g} s"] += unfinished
            self.all_settled.set()
            for task in tasks:
                task.cancel()
        for _ in range(self.config.clients):
            self.completed_queue.put_nowait(None)
        await asyncio.gather(*tasks, return_exceptions=True)
        report = self.report
        report.run_s = time.perf_counter() - started
        report.errors = dict(self.errors)
        report.status_latency = Latency.of(self.status_latencies)
        report.submit_latency = Latency.of(self.submit_latencies)
        report.result_latency = Latency.of(self.result_latencies)
        report.download_latency = Latency.of(self.download_latencies)
        report.status_calls = len(self.status_latencies)
        if self.first_submit_at is not None and self.last_completion_at is not None:
            report.completion_s = self.last_completion_at - self.first_submit_at
        return report

    # -- clients: submit, then fetch results -------------------------------------------------------

    async def client(self, started: float) -> None:
        async with self.new_client() as client:
            while self.next_job < self.config.jobs:
                index = self.next_job
                self.next_job += 1
                await self.submit(client, index)
                if self.next_job >= self.config.jobs and not self.report.submit_all_s:
                    self.report.submit_all_s = time.perf_counter() - started
            while (request_id := await self.completed_queue.get()) is not None:
                await self.check_result(client, request_id)

    async def submit(self, client: httpx.AsyncClient, index: int) -> None:
        sent = time.perf_counter()
        if self.first_submit_at is None:
            self.first_submit_at = sent
        try:
            response = await client.post(submit_path(), json=job_input(f"load job {index}", seed=index))
        except httpx.HTTPError as error:
            self.errors[error_kind("submit", error)] += 1
            self.settle()
            return
        self.submit_latencies.append(time.perf_counter() - sent)
        if response.status_code != 200:
            self.errors[error_kind("submit", response)] += 1
            self.settle()
            return
        self.report.submitted += 1
        self.pending.append(response.json()["request_id"])

    async def check_result(self, client: httpx.AsyncClient, request_id: str) -> None:
        try:
            sent = time.perf_counter()
            response = await client.get(result_path(request_id))
            self.result_latencies.append(time.perf_counter() - sent)
            if response.status_code != 200:
                body = response.json()
                self.errors[f"job failed: {body.get('error_type') or response.status_code}"] += 1
                self.report.failed_jobs.append(f"{request_id}: HTTP {response.status_code} {body.get('detail')}")
                return
            video = response.json().get("video") or {}
            if not video.get("url") or not video.get("file_size"):
                self.errors["result: no video"] += 1
                return
            sent = time.perf_counter()
            download = await client.get(video["url"])
            self.download_latencies.append(time.perf_counter() - sent)
            if download.status_code != 200:
                self.errors[error_kind("video download", download)] += 1
            elif len(download.content) != video["file_size"]:
                self.errors["video download: wrong size"] += 1
            else:
                self.report.completed += 1
        except httpx.HTTPError as error:
            self.errors[error_kind("result", error)] += 1
        finally:
            self.settle()

    # -- pollers -----------------------------------------------------------------------------------

    async def poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        period_s = 1 / self.config.poll_hz
        next_at = loop.time() + self.rng.uniform(0, period_s)
        async with self.new_client() as client:
            while not self.all_settled.is_set():
                delay_s = next_at - loop.time()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                next_at = max(next_at + period_s, loop.time())
                if self.pending and not self.all_settled.is_set():
                    await self.poll(client, self.pending.popleft())

    async def poll(self, client: httpx.AsyncClient, request_id: str) -> None:
        sent = time.perf_counter()
        try:
            response = await client.get(status_path(request_id), params={"logs": "0"})
        except httpx.HTTPError as error:
            self.errors[error_kind("status", error)] += 1
            self.pending.append(request_id)
            return
        answered = time.perf_counter()
        self.status_latencies.append(answered - sent)
        status = response.json().get("status") if response.status_code in (200, 202) else None
        if status == "COMPLETED":
            self.last_completion_at = answered
            self.completed_queue.put_nowait(request_id)
            return
        if status not in PENDING_STATUSES:
            self.errors[error_kind("status", response) if status is None else f"status: unexpected {status}"] += 1
        self.pending.append(request_id)


def run_load(server: FramecastServer, config: LoadConfig) -> LoadReport:
    """Drive `server` (already started) with `config`; blocks until every job is done or the timeout."""
    run = LoadRun(base_url=server.url, api_key=server.api_key, ca_path=server.ca_path, config=config)
    return asyncio.run(run.run())


def start_server(base: Path, tiny_models: Path, *, workers: int) -> FramecastServer:
    """`framecast serve` with `workers` worker processes on the system tests' bindings, over TLS."""
    data = prepare_data_dir(base, tiny_models)
    server = FramecastServer(
        data_dir=data.data_dir,
        certificates=make_certificates(base / "certs"),
        workers=workers,
        extra_arguments=["--models", str(data.bindings)],
        log_path=base / "server.log",
    )
    return server.start()


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    defaults = LoadConfig()
    parser = argparse.ArgumentParser(
        prog="scripts/load-test",
        description="Start `framecast serve` (tiny models, its own temp data dir, TLS), submit --jobs jobs from "
        "--clients concurrent clients while --pollers pollers poll status at --poll-hz each, and print a report. "
        "Exits 1 on any error or any job that did not complete (docs/reliability.md).",
    )
    parser.add_argument("--jobs", type=int, default=defaults.jobs)
    parser.add_argument("--clients", type=int, default=defaults.clients)
    parser.add_argument("--pollers", type=int, default=defaults.pollers)
    parser.add_argument("--poll-hz", type=float, default=defaults.poll_hz, help="status calls per second per poller")
    parser.add_argument(
        "--workers",
        type=int,
        default=WORKERS,
        help=f"worker processes of the server (default: {WORKERS}; see docs/reliability.md)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="pollers' start offsets")
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s, help="deadline for every job")
    parser.add_argument("--tiny-models", type=Path, help="reuse tiny models built by `framecast dev tiny-models`")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data dir, server log)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    config = LoadConfig(
        jobs=arguments.jobs,
        clients=arguments.clients,
        pollers=arguments.pollers,
        poll_hz=arguments.poll_hz,
        seed=arguments.seed,
        timeout_s=arguments.timeout_s,
    )
    command_started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="framecast-load-"))
    print(f"load test: working in {base}", flush=True)
    tiny_models = arguments.tiny_models or build_tiny_models(base / "tiny")
    server_started = time.perf_counter()
    server = start_server(base / "run", tiny_models, workers=arguments.workers)
    try:
        server_start_s = time.perf_counter() - server_started
        assert server.process is not None
        api = psutil.Process(server.process.pid)
        api_before, tree_before = api.cpu_times(), tree_cpu_s(api.pid)
        machine_before = psutil.cpu_times()
        pressure = CpuPressure()
        client_before = time.process_time()
        print(f"server ready in {server_start_s:.1f} s at {server.url}; running the load...", flush=True)
        report = run_load(server, config)
        api_after, tree_after = api.cpu_times(), tree_cpu_s(api.pid)
        machine_after = psutil.cpu_times()
        api_s = api_after.user + api_after.system - api_before.user - api_before.system
        report.cpu_s = {
            "API process": api_s,
            "workers and engines": tree_after - tree_before - api_s,
            "load client": time.process_time() - client_before,
        }
        busy = sum(machine_after) - machine_after.idle - (sum(machine_before) - machine_before.idle)
        total = sum(machine_after) - sum(machine_before)
        report.machine_busy_percent = 100 * busy / total if total else None
        report.cpu_pressure_percent = pressure.percent()
        report.server_start_s = server_start_s
    finally:
        server.stop()
    report.server_log_problems = log_problems(server.log_text())
    report.command_s = time.perf_counter() - command_started
    print(report.render(), flush=True)
    if arguments.json:
        arguments.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    if arguments.keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    problems = report.problems()
    print("FAIL: " + "; ".join(problems) if problems else "PASS: zero errors, every job completed", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
