"""What the load and chaos drivers share: a data dir bound to one small job, `framecast worker` processes,
the job input, error kinds, latency summaries and CPU accounting.

Both drivers serve one endpoint, fal-ai/wan-i2v, from a bindings file that puts the tiny random-weight
Wan 2.1 I2V model at 1/64 of 480p (16x16 pixels, the smallest size a binding renders). The request is the
smallest the endpoint accepts: 81 frames, 1 step, no classifier-free guidance. A job then costs about 0.4 s of
one CPU thread (the VAE's 81 frames are most of it), and
the whole serving path (TLS, auth, validation, the queue, the worker's claim and lease, the engine process,
the MP4 encode, the fenced completion, the webhook outbox) is the one real jobs take.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image

ENDPOINT = "fal-ai/wan-i2v"
RENDER_SCALE = 1 / 64
BINDINGS_TOML = f"""\
# Written by tests/system: the one endpoint the load and chaos tests use, on the tiny Wan 2.1 I2V model at
# 1/64 of 480p (16x16 pixels), so that a job costs about 0.4 s of one CPU thread.
[endpoints."{ENDPOINT}"]
engine = "diffusers-wan-i2v"
weights = "${{data_dir}}/models/tiny/wan21_i2v"
device = "cpu"
dtype = "float32"
render_scale = {RENDER_SCALE}
"""
TINY_MODEL = "wan21_i2v"
# How long a fresh `framecast worker` may take to import torch and load the tiny model on a busy machine.
WORKER_START_TIMEOUT_S = 120.0


def png_data_uri(width: int = 32, height: int = 18) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


IMAGE_URI = png_data_uri()


def job_input(prompt: str, seed: int) -> dict[str, Any]:
    """The smallest wan-i2v request: 81 frames (the minimum), one step, guidance 0 (no second pass)."""
    return {
        "prompt": prompt,
        "negative_prompt": "",
        "image_url": IMAGE_URI,
        "resolution": "480p",
        "aspect_ratio": "16:9",
        "num_frames": 81,
        "num_inference_steps": 1,
        "guide_scale": 0,
        "acceleration": "none",
        "seed": seed,
    }


def submit_path() -> str:
    return f"/queue/{ENDPOINT}"


def status_path(request_id: str) -> str:
    return f"/queue/{ENDPOINT}/requests/{request_id}/status"


def result_path(request_id: str) -> str:
    return f"/queue/{ENDPOINT}/requests/{request_id}"


def error_kind(operation: str, failure: httpx.Response | BaseException) -> str:
    """`submit: HTTP 503`, `status: ReadTimeout`: what the report counts errors by."""
    if isinstance(failure, httpx.Response):
        return f"{operation}: HTTP {failure.status_code}"
    return f"{operation}: {type(failure).__name__}"


def build_tiny_models(directory: Path) -> Path:
    """The tiny random-weight pipelines, built offline by the real CLI (seconds). Raises `RuntimeError`."""
    completed = subprocess.run(
        [sys.executable, "-m", "framecast", "dev", "tiny-models", str(directory)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"framecast dev tiny-models failed:\n{completed.stderr[-4000:]}")
    return directory


@dataclass(frozen=True)
class SystemData:
    data_dir: Path
    bindings: Path


def prepare_data_dir(base: Path, tiny_models: Path) -> SystemData:
    """A fresh data dir holding the tiny Wan 2.1 I2V model, and the bindings file that serves it."""
    data_dir = base / "data"
    shutil.copytree(tiny_models / TINY_MODEL, data_dir / "models" / "tiny" / TINY_MODEL)
    bindings = base / "bindings.toml"
    bindings.write_text(BINDINGS_TOML)
    return SystemData(data_dir=data_dir, bindings=bindings)


def child_environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FRAMECAST_")}
    environment["HF_HUB_OFFLINE"] = "1"
    return environment


class WorkerProcess:
    """One `framecast worker` process, started by the driver in a session of its own.

    SIGKILL hits the worker alone; its engine process follows it down (PR_SET_PDEATHSIG), as when a
    machine's worker crashes. Restart with `start()` again: a new pid, so a new worker id.
    """

    def __init__(self, *, name: str, data: SystemData, log_path: Path, extra_arguments: list[str]) -> None:
        self.name = name
        self.data = data
        self.log_path = log_path
        self.extra_arguments = extra_arguments
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> WorkerProcess:
        arguments = [
            sys.executable, "-m", "framecast", "worker",
            "--data-dir", str(self.data.data_dir),
            "--models", str(self.data.bindings),
            "--torch-threads", "1",
            "--log-level", "warning",
            *self.extra_arguments,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=log, env=child_environment(), start_new_session=True
            )
        return self

    def kill(self) -> int:
        """SIGKILL the worker process only; returns its pid."""
        assert self.process is not None
        pid = self.process.pid
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return pid

    def stop(self) -> None:
        """SIGTERM (the worker finishes its job's bookkeeping and deregisters), then SIGKILL its whole session."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def ready_worker_pids(health: dict[str, Any] | None) -> set[int]:
    """Pids of the workers that `GET /health` lists as ready (worker ids are host:pid:token)."""
    if health is None:
        return set()
    return {int(worker["worker_id"].split(":")[1]) for worker in health["workers"] if worker["state"] == "ready"}


@dataclass(frozen=True)
class Latency:
    """Percentiles of one kind of request, in milliseconds (linear interpolation between ranks)."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_s: list[float]) -> Latency:
        if not samples_s:
            return cls(0, *(float("nan"),) * 4)
        if len(samples_s) == 1:
            return cls(1, *(samples_s[0] * 1000,) * 4)
        cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
        return cls(len(samples_s), cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000, max(samples_s) * 1000)

    def __str__(self) -> str:
        return (
            f"p50 {self.p50_ms:.1f} ms, p95 {self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"max {self.max_ms:.1f} ms (n={self.count})"
        )


NO_SAMPLES = Latency(0, *(float("nan"),) * 4)


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants; 0 for a process that is gone."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class CpuPressure:
    """The share of wall time during which some task on this machine waited for a CPU (Linux PSI), between
    `start()` and `percent()`: near 0 on an idle machine; near 100 when the CPUs were oversubscribed all along
    (by the run itself, or by anything else on the machine). None where /proc/pressure/cpu is missing."""

    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.stall_s = self.read_stall_s()

    @staticmethod
    def read_stall_s() -> float | None:
        try:
            line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
        return int(line.rsplit("total=", 1)[1]) / 1e6

    def percent(self) -> float | None:
        now = self.read_stall_s()
        if now is None or self.stall_s is None:
            return None
        return 100 * (now - self.stall_s) / max(time.monotonic() - self.started_at, 1e-9)


def log_problems(text: str) -> list[str]:
    """Lines of a server or worker log that report an error or a traceback."""
    return [line for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")]
