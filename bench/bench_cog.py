"""One request cycle, framecast against cog's HTTP server, side by side in one run, with the same zero work.

framecast: the real `framecast serve` (API process, one worker, its engine process) with the `test-null`
engine bound to fal-ai/wan-i2v. cog: cog's server (`python -m cog.server.http`; in cog 0.23.1 that is
coglet, a Rust HTTP server with a Python worker process) with bench/cog_predictor/predict.py. Both get the
same 96x64 PNG data URI and end with the same 81-frame 16x16 black H.264 MP4 in the client's hands; see
bench/README.md for what each side does per cycle and what "the same zero work" means here.

Only one server runs at a time (an idle framecast worker looks for jobs every 20 ms, which would load the
other side's measurement); the sides alternate in rounds (A B C, C B A, ...) so that drift of this machine
hits both alike. Plain HTTP and no API keys on both sides, as cog has neither.

A measurement script, not a test: it prints numbers and never fails on them. Only 127.0.0.1 is contacted.
cog lives in a virtual environment of its own (.venv-cog-<version>, made by `--setup-cog`), never in
framecast's: `--cog-version 0.16.12` measures the last cog whose server was Python (FastAPI + uvicorn).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.bench_queue import ENDPOINT, PROMPT, WAN_INPUT, child_environment, ms, percentile, png_data_uri, run_cycle  # noqa: E402
from bench.measure import cpu_stall_s, session_cpu_s, table  # noqa: E402
from tests.e2e.server import free_port, wait_for  # noqa: E402
from tests.webhook_receiver import WebhookReceiver  # noqa: E402

# cog 0.23.1 serves with coglet (Rust, pulled in by cog); 0.16.12 is the last release with the Python server.
DEFAULT_COG_VERSION = "0.23.1"
# The predictor's own packages, at the versions framecast's venv has.
COG_PREDICTOR_REQUIREMENTS = ("av==18.1.0", "numpy==2.4.6")
COG_PREDICTOR_DIR = REPO_ROOT / "bench" / "cog_predictor"
# The same input on both sides: framecast's Wan input (81 frames at 16 fps) and cog's predictor fields.
COG_INPUT_FIELDS = {"prompt": PROMPT, "num_frames": WAN_INPUT["num_frames"], "frames_per_second": 16}
NULL_BINDINGS = f'[endpoints."{ENDPOINT}"]\nengine = "test-null"\nweights = "none"\n'
SERVER_START_TIMEOUT_S = 120.0
CYCLE_TIMEOUT_S = 30.0
COG_BUSY_RETRY_S = 0.001
SIDES = ("framecast", "cog", "cog-none")
# Each side's ways of running one request; cog has no status polling (GET /predictions/<id> answers 405).
MODES = {"framecast": ("sync", "poll", "webhook"), "cog": ("sync", "webhook"), "cog-none": ("sync", "webhook")}
COG_PREDICTORS = {"cog": "predict.py:VideoPredictor", "cog-none": "predict.py:NonePredictor"}


# -- the servers -------------------------------------------------------------------------------------------


class ServerProcess:
    """One server command in a session of its own, on a free port on 127.0.0.1; `stop` ends the whole session."""

    def __init__(
        self,
        command: list[str],
        *,
        port: int,
        cwd: Path,
        environment: dict[str, str],
        log_path: Path,
        ready: Callable[[httpx.Client], bool],
    ) -> None:
        self.command = command
        self.port = port
        self.cwd = cwd
        self.environment = environment
        self.log_path = log_path
        self.ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Raises `RuntimeError` when the server exits early, `TimeoutError` when it is not ready in time."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.environment, stdout=log, stderr=log, start_new_session=True
            )
        process = self.process

        def is_ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{self.command[:4]} exited with {process.returncode}; see {self.log_path}")
            try:
                with httpx.Client(base_url=self.url, timeout=5) as client:
                    return self.ready(client)
            except httpx.TransportError:
                return False

        wait_for(is_ready, timeout_s=SERVER_START_TIMEOUT_S, interval_s=0.1, what=f"{self.url} to be ready")
        return self

    @property
    def session_id(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for whatever of its session is left (the server's own children included)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def framecast_ready(client: httpx.Client) -> bool:
    workers = client.get("/health").json()["workers"]
    return any(
        worker["state"] == "ready" and worker["bindings"].get(ENDPOINT, {}).get("state") == "ready"
        for worker in workers
    )


def cog_ready(client: httpx.Client) -> bool:
    return bool(client.get("/health-check").json().get("status") == "READY")


def framecast_server(work: Path, poll_interval_s: float | None) -> ServerProcess:
    """A fresh data directory each time, so that no phase inherits the jobs of the one before."""
    data_dir = Path(tempfile.mkdtemp(prefix="framecast-", dir=work))
    bindings = work / "null-bindings.toml"
    bindings.write_text(NULL_BINDINGS)
    port = free_port()
    command = [
        sys.executable, "-m", "framecast", "serve",
        "--models", str(bindings),
        "--data-dir", str(data_dir),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--no-auth",  # cog has no keys
        "--test-faults",  # test-null serves only with it
        "--allow-private-fetch",  # webhooks to 127.0.0.1
        "--log-level", "warning",
    ]  # fmt: skip
    if poll_interval_s is not None:
        command += ["--poll-interval-s", str(poll_interval_s)]
    return ServerProcess(
        command,
        port=port,
        cwd=REPO_ROOT,
        environment=child_environment(),
        log_path=work / "framecast-server.log",
        ready=framecast_ready,
    )


def cog_server(work: Path, cog_python: Path, predictor: str) -> ServerProcess:
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("FRAMECAST_", "COG_"))}
    # coglet starts its Python worker as `python` from PATH: it must be the cog venv's.
    environment["PATH"] = f"{cog_python.parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["VIRTUAL_ENV"] = str(cog_python.parent.parent)
    environment.pop("PYTHONPATH", None)
    environment["PORT"] = str(port)
    environment["COG_PREDICT_TYPE_STUB"] = predictor  # what `cog build` bakes into the image
    # The predictor's output files (and cog's decoded inputs) go to the bench's temp dir, removed at the end.
    temporary = work / "cog-tmp"
    temporary.mkdir(exist_ok=True)
    environment["TMPDIR"] = str(temporary)
    return ServerProcess(
        [str(cog_python), "-m", "cog.server.http", "--host", "127.0.0.1"],
        port=port,
        cwd=COG_PREDICTOR_DIR,
        environment=environment,
        log_path=work / "cog-server.log",
        ready=cog_ready,
    )


# -- one request cycle, each way ------------------------------------------------------------------------------


@dataclass
class Sample:
    total_s: float
    parts_s: dict[str, float]
    output_bytes: int
    server_cpu_s: float = float("nan")  # CPU of every process of the server during this cycle
    busy_retries: int = 0  # cog: 409 "At capacity" answers retried


def is_mp4(data: bytes) -> bool:
    return data[4:8] == b"ftyp"


def data_uri_bytes(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError(f"not a base64 data URI: {uri[:40]!r}")
    return base64.b64decode(payload)


def cog_output_bytes(output: Any) -> int:
    """The size of the output the client now holds: the MP4, or the string of the no-output predictor.

    cog inlines an output file as a data URI, except cog 0.16 in a webhook, which names the file on the
    server's disk (a remote client would need the server's --upload-url): read there, as this is one machine.
    """
    if isinstance(output, str) and (output.startswith("data:") or output.startswith("/")):
        data = data_uri_bytes(output) if output.startswith("data:") else Path(output).read_bytes()
        if not is_mp4(data):
            raise ValueError("cog's output is not an MP4")
        return len(data)
    return len(str(output))


def download(client: httpx.Client, url: str) -> int:
    response = client.get(url)
    response.raise_for_status()
    if not is_mp4(response.content):
        raise ValueError(f"{url} is not an MP4")
    return len(response.content)


def wait_webhook(receiver: WebhookReceiver, seen: int, request_id: str, done: Callable[[dict[str, Any]], bool]) -> Any:
    """The first webhook after the first `seen` that is about `request_id` and `done`."""
    while True:
        received = receiver.wait_for(seen + 1, timeout_s=CYCLE_TIMEOUT_S)
        for hook in received[seen:]:
            body = hook.json()
            if body.get("request_id", body.get("id")) == request_id and done(body):
                return body
        seen = len(received)


def framecast_sync(client: httpx.Client, image_uri: str, _receiver: WebhookReceiver) -> Sample:
    started = time.perf_counter()
    response = client.post(f"/run/{ENDPOINT}", json={**WAN_INPUT, "image_url": image_uri})
    response.raise_for_status()
    answered = time.perf_counter()
    size = download(client, response.json()["video"]["url"])
    finished = time.perf_counter()
    return Sample(finished - started, {"run": answered - started, "download": finished - answered}, size)


def framecast_poll(client: httpx.Client, image_uri: str, _receiver: WebhookReceiver) -> Sample:
    cycle = run_cycle(client, image_uri, download=True)
    if cycle.output_bytes < 8:
        raise ValueError("framecast's output is empty")
    parts = {name: getattr(cycle, f"{name}_s") for name in ("submit", "queued", "running", "result", "download")}
    return Sample(cycle.total_s, parts, cycle.output_bytes)


def framecast_webhook(client: httpx.Client, image_uri: str, receiver: WebhookReceiver) -> Sample:
    seen = len(receiver.received)
    started = time.perf_counter()
    response = client.post(
        f"/queue/{ENDPOINT}", params={"fal_webhook": receiver.url}, json={**WAN_INPUT, "image_url": image_uri}
    )
    response.raise_for_status()
    submitted = time.perf_counter()
    body = wait_webhook(receiver, seen, response.json()["request_id"], lambda _body: True)
    if body["status"] != "OK":
        raise RuntimeError(f"framecast job failed: {body}")
    notified = time.perf_counter()
    size = download(client, body["payload"]["video"]["url"])
    finished = time.perf_counter()
    parts = {"submit": submitted - started, "notify": notified - submitted, "download": finished - notified}
    return Sample(finished - started, parts, size)


def wait_cog_idle(client: httpx.Client) -> None:
    """Untimed, before each cog cycle: cog answers 409 while its one slot is still busy with the last prediction."""
    wait_for(lambda: cog_ready(client), timeout_s=CYCLE_TIMEOUT_S, interval_s=COG_BUSY_RETRY_S, what="cog idle")


def post_prediction(client: httpx.Client, body: dict[str, Any], headers: dict[str, str]) -> tuple[httpx.Response, int]:
    """POST /predictions, retrying 409 "At capacity" (counted); the time retried is part of the cycle."""
    retries = 0
    while True:
        response = client.post("/predictions", json=body, headers=headers)
        if response.status_code != 409:
            response.raise_for_status()
            return response, retries
        retries += 1
        time.sleep(COG_BUSY_RETRY_S)


def cog_sync(client: httpx.Client, image_uri: str, _receiver: WebhookReceiver) -> Sample:
    wait_cog_idle(client)
    started = time.perf_counter()
    request = {"id": uuid.uuid4().hex, "input": {"image": image_uri, **COG_INPUT_FIELDS}}
    response, retries = post_prediction(client, request, {})
    body = response.json()
    if body["status"] != "succeeded":
        raise RuntimeError(f"cog prediction failed: {body}")
    answered = time.perf_counter()
    size = cog_output_bytes(body["output"])
    finished = time.perf_counter()
    parts = {"predictions": answered - started, "decode": finished - answered}
    return Sample(finished - started, parts, size, busy_retries=retries)


def cog_webhook(client: httpx.Client, image_uri: str, receiver: WebhookReceiver) -> Sample:
    wait_cog_idle(client)
    seen = len(receiver.received)
    started = time.perf_counter()
    prediction_id = uuid.uuid4().hex  # as Replicate sends one; cog 0.16 has none otherwise
    request = {
        "id": prediction_id,
        "input": {"image": image_uri, **COG_INPUT_FIELDS},
        "webhook": receiver.url,
        "webhook_events_filter": ["completed"],
    }
    _, retries = post_prediction(client, request, {"Prefer": "respond-async"})
    submitted = time.perf_counter()
    body = wait_webhook(
        receiver, seen, prediction_id, lambda hook: hook.get("status") in ("succeeded", "failed", "canceled")
    )
    if body["status"] != "succeeded":
        raise RuntimeError(f"cog prediction failed: {body}")
    notified = time.perf_counter()
    size = cog_output_bytes(body["output"])
    finished = time.perf_counter()
    parts = {"submit": submitted - started, "notify": notified - submitted, "decode": finished - notified}
    return Sample(finished - started, parts, size, busy_retries=retries)


CYCLES: dict[str, dict[str, Callable[[httpx.Client, str, WebhookReceiver], Sample]]] = {
    "framecast": {"sync": framecast_sync, "poll": framecast_poll, "webhook": framecast_webhook},
    "cog": {"sync": cog_sync, "webhook": cog_webhook},
    "cog-none": {"sync": cog_sync, "webhook": cog_webhook},
}


def cog_status_poll_answer(client: httpx.Client, image_uri: str) -> int:
    """What GET /predictions/<id> answers for an async prediction: cog documents webhooks as the only way."""
    wait_cog_idle(client)
    prediction_id = uuid.uuid4().hex
    request = {"id": prediction_id, "input": {"image": image_uri, **COG_INPUT_FIELDS}}
    post_prediction(client, request, {"Prefer": "respond-async"})
    status = client.get(f"/predictions/{prediction_id}").status_code
    wait_cog_idle(client)
    return status


# -- phases and rounds ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    side: str
    round: int
    start_s: float
    idle_cpu_pct: float
    samples: dict[str, list[Sample]] = field(default_factory=dict)


def run_phase(
    side: str, round_index: int, arguments: argparse.Namespace, work: Path, receiver: WebhookReceiver, image_uri: str
) -> tuple[Phase, dict[str, Any]]:
    if side == "framecast":
        server = framecast_server(work, arguments.framecast_poll_interval_s)
    else:
        server = cog_server(work, arguments.cog_python, COG_PREDICTORS[side])
    facts: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        server.start()
        start_s = time.perf_counter() - started
        cycles = CYCLES[side]
        with httpx.Client(base_url=server.url, timeout=CYCLE_TIMEOUT_S) as client:
            for _ in range(arguments.warmup):
                for cycle in cycles.values():
                    cycle(client, image_uri, receiver)
            if side == "cog" and round_index == 0:
                facts["cog_get_prediction_status"] = cog_status_poll_answer(client, image_uri)
            idle_cpu_pct = float("nan")
            if arguments.idle_s > 0:
                cpu, wall = session_cpu_s(server.session_id), time.perf_counter()
                time.sleep(arguments.idle_s)
                idle_cpu_pct = 100 * (session_cpu_s(server.session_id) - cpu) / (time.perf_counter() - wall)
            phase = Phase(side, round_index, start_s, idle_cpu_pct, {mode: [] for mode in cycles})
            # The modes take turns, so that each sees the same stretch of this phase.
            for _ in range(arguments.cycles):
                for mode, cycle in cycles.items():
                    cpu = session_cpu_s(server.session_id)
                    sample = cycle(client, image_uri, receiver)
                    sample.server_cpu_s = session_cpu_s(server.session_id) - cpu
                    phase.samples[mode].append(sample)
    finally:
        server.stop()
    return phase, facts


def cog_venv(version: str) -> Path:
    return REPO_ROOT / f".venv-cog-{version}"


def setup_cog(version: str) -> int:
    """Make the cog venv of `version` from PyPI (pip); never touches framecast's .venv."""
    venv = cog_venv(version)
    requirements = [f"cog=={version}", *COG_PREDICTOR_REQUIREMENTS]
    base_python = getattr(sys, "_base_executable", sys.executable)
    print(f"creating {venv} with {base_python} and installing {' '.join(requirements)} ...", flush=True)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True)
    return 0


# -- facts about this run -------------------------------------------------------------------------------------


def versions(cog_python: Path) -> dict[str, str]:
    ours = {name: importlib.metadata.version(name) for name in ("fastapi", "starlette", "uvicorn", "pydantic", "av")}
    code = (
        "import importlib.metadata as m, json, platform\n"
        "found = {d.metadata['Name'].lower(): d.version for d in m.distributions()}\n"
        "names = ('cog', 'coglet', 'fastapi', 'uvicorn', 'av', 'numpy')\n"
        "print(json.dumps({'python': platform.python_version(), **{n: found[n] for n in names if n in found}}))"
    )
    theirs = json.loads(
        subprocess.run([str(cog_python), "-c", code], capture_output=True, text=True, check=True).stdout
    )
    return {
        "python": platform.python_version(),
        **{f"framecast:{name}": version for name, version in ours.items()},
        **{f"cog-venv:{name}": version for name, version in theirs.items()},
    }


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {"cpus": os.cpu_count(), "cpu_model": model, "loadavg_start": list(os.getloadavg())}


# -- report ---------------------------------------------------------------------------------------------------


def pooled(phases: list[Phase], side: str, mode: str) -> list[Sample]:
    return [sample for phase in phases if phase.side == side for sample in phase.samples.get(mode, [])]


def p50_ms(samples: list[Sample]) -> float:
    return ms(percentile([sample.total_s for sample in samples], 50))


def p99_ms(samples: list[Sample]) -> float:
    return ms(percentile([sample.total_s for sample in samples], 99))


def per_round_ratios(phases: list[Phase], framecast_mode: str, cog_mode: str) -> list[float]:
    ratios = []
    for round_index in sorted({phase.round for phase in phases}):
        ours = [phase for phase in phases if phase.round == round_index]
        framecast, cog = pooled(ours, "framecast", framecast_mode), pooled(ours, "cog", cog_mode)
        if framecast and cog:
            ratios.append(round(p50_ms(framecast) / p50_ms(cog), 2))
    return ratios


COMPARISONS = (
    ("sync", "sync", "sync: framecast POST /run; cog POST /predictions"),
    ("poll", "webhook", "async: framecast queue + status polls every 20 ms; cog respond-async + webhook"),
    ("webhook", "webhook", "async, webhook on both: framecast ?fal_webhook; cog respond-async + webhook"),
)


def report(phases: list[Phase]) -> tuple[str, dict[str, Any]]:
    rows, summary = [], {}
    for framecast_mode, cog_mode, label in COMPARISONS:
        framecast, cog, floor = (
            pooled(phases, "framecast", framecast_mode),
            pooled(phases, "cog", cog_mode),
            pooled(phases, "cog-none", cog_mode),
        )
        if not framecast or not cog:
            continue
        ratio = p50_ms(framecast) / p50_ms(cog)
        ratios = per_round_ratios(phases, framecast_mode, cog_mode)
        rows.append(
            [
                f"{framecast_mode} / {cog_mode}",
                len(framecast),
                p50_ms(framecast),
                p99_ms(framecast),
                p50_ms(cog),
                p99_ms(cog),
                f"{ratio:.2f}",
                round(p50_ms(framecast) - p50_ms(cog), 1),
                " ".join(f"{value:.2f}" for value in ratios),
                p50_ms(floor) if floor else "-",
            ]
        )
        summary[f"{framecast_mode}/{cog_mode}"] = {
            "label": label,
            "framecast": {"n": len(framecast), "p50_ms": p50_ms(framecast), "p99_ms": p99_ms(framecast)},
            "cog": {"n": len(cog), "p50_ms": p50_ms(cog), "p99_ms": p99_ms(cog)},
            "cog_no_output": {"n": len(floor), "p50_ms": p50_ms(floor)} if floor else None,
            "ratio_p50": round(ratio, 3),
            "difference_p50_ms": round(p50_ms(framecast) - p50_ms(cog), 1),
            "per_round_ratio_p50": ratios,
        }
    headers = ["framecast / cog", "n", "fc p50", "fc p99", "cog p50", "cog p99", "fc/cog", "fc-cog ms"]
    headers += ["per round fc/cog", "cog no-output p50"]
    lines = [table(headers, rows), ""]
    for _, _, label in COMPARISONS:
        lines.append(f"  {label}")
    return "\n".join(lines), summary


def breakdown(phases: list[Phase]) -> str:
    rows = []
    for side in SIDES:
        for mode in MODES[side]:
            samples = pooled(phases, side, mode)
            if not samples:
                continue
            parts = {
                name: ms(percentile([sample.parts_s[name] for sample in samples], 50)) for name in samples[0].parts_s
            }
            cpu = [sample.server_cpu_s for sample in samples]
            rows.append(
                [
                    f"{side} {mode}",
                    p50_ms(samples),
                    ", ".join(f"{name} {value}" for name, value in parts.items()),
                    round(1000 * sum(cpu) / len(cpu), 1),
                    sorted({sample.output_bytes for sample in samples})[-1],
                    sum(sample.busy_retries for sample in samples),
                ]
            )
    return table(["side mode", "p50", "p50 of each part (ms)", "server cpu ms", "output bytes", "409s"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one phase per side (default 3)")
    parser.add_argument("--cycles", type=int, default=20, help="measured cycles per mode per phase (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="discarded cycles per mode per phase (default 3)")
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle window for the idle-CPU reading (default 2)")
    parser.add_argument(
        "--framecast-poll-interval-s",
        type=float,
        help="framecast serve --poll-interval-s (how often a sync run looks for its result); default: the server's",
    )
    parser.add_argument("--sides", default=",".join(SIDES), help=f"subset of {','.join(SIDES)}")
    parser.add_argument(
        "--cog-version", default=DEFAULT_COG_VERSION, help=f"cog release to measure (default {DEFAULT_COG_VERSION})"
    )
    parser.add_argument("--cog-python", type=Path, help="python of the cog venv (default .venv-cog-<version>)")
    parser.add_argument("--setup-cog", action="store_true", help="create .venv-cog-<version> from PyPI, then exit")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs) and print its path")
    arguments = parser.parse_args()
    if arguments.setup_cog:
        return setup_cog(arguments.cog_version)
    if arguments.cog_python is None:
        arguments.cog_python = cog_venv(arguments.cog_version) / "bin" / "python"
    sides = [side for side in arguments.sides.split(",") if side]
    if not set(sides) <= set(SIDES) or min(arguments.rounds, arguments.cycles) < 1 or arguments.warmup < 0:
        parser.error(f"--sides must be a subset of {','.join(SIDES)}; --rounds and --cycles >= 1; --warmup >= 0")
    if any(side.startswith("cog") for side in sides) and not arguments.cog_python.exists():
        parser.error(
            f"no cog venv at {arguments.cog_python}; make it with: "
            f"python bench/bench_cog.py --setup-cog --cog-version {arguments.cog_version}"
        )

    facts: dict[str, Any] = {"machine": machine(), "versions": versions(arguments.cog_python)}
    work = Path(tempfile.mkdtemp(prefix="framecast-bench-cog-"))
    image_uri = png_data_uri()
    receiver = WebhookReceiver().start()
    phases: list[Phase] = []
    stall_start, wall_start = cpu_stall_s(), time.perf_counter()
    try:
        for round_index in range(arguments.rounds):
            order = sides if round_index % 2 == 0 else list(reversed(sides))
            for side in order:
                print(f"round {round_index + 1}/{arguments.rounds}: {side} ...", flush=True)
                phase, phase_facts = run_phase(side, round_index, arguments, work, receiver, image_uri)
                phases.append(phase)
                facts.update(phase_facts)
    finally:
        receiver.stop()
        if arguments.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    wall_s = time.perf_counter() - wall_start
    facts["cpu_pressure_pct"] = round(100 * (cpu_stall_s() - stall_start) / wall_s, 1)
    facts["loadavg_end"] = list(os.getloadavg())
    facts["wall_s"] = round(wall_s, 1)

    comparison, summary = report(phases)
    print()
    cog_versions = facts["versions"]
    server_kind = "coglet, Rust" if "cog-venv:coglet" in cog_versions else "Python: FastAPI + uvicorn"
    print(f"cog {cog_versions.get('cog-venv:cog')} ({server_kind})")
    print("one request cycle, ms (pooled over rounds; fc = framecast); client holds the MP4 at the end of each")
    print(comparison)
    print()
    print("each side and mode: p50 and the p50 of its parts (ms), server CPU per cycle (all its processes, ms)")
    print(breakdown(phases))
    print()
    starts = {side: [round(phase.start_s, 1) for phase in phases if phase.side == side] for side in sides}
    idle = {side: [round(phase.idle_cpu_pct, 1) for phase in phases if phase.side == side] for side in sides}
    print(f"server start to ready (s): {starts}")
    print(f"idle server CPU (% of one core, {arguments.idle_s}s after warm-up): {idle}")
    if "cog_get_prediction_status" in facts:
        print(f"cog GET /predictions/<id> of an async prediction: HTTP {facts['cog_get_prediction_status']}")
    print(f"machine: {facts['machine']}; CPU pressure during the run {facts['cpu_pressure_pct']} %")
    print(f"load average start {facts['machine']['loadavg_start']}, end {facts['loadavg_end']}")
    print(f"versions: {facts['versions']}")

    if arguments.json:
        document = {
            "config": {key: str(value) for key, value in vars(arguments).items() if key not in ("json", "setup_cog")},
            "facts": facts,
            "summary": summary,
            "phases": [
                {
                    **asdict(phase),
                    "samples": {mode: [asdict(s) for s in samples] for mode, samples in phase.samples.items()},
                }
                for phase in phases
            ],
        }
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
