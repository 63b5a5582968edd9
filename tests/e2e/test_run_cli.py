"""`framecast run`, the real CLI in a subprocess, against a real `framecast serve --models tiny` over TLS."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e

ENDPOINT = "fal-ai/wan-i2v"
# 480p 16:9 is 832x480; the tiny profile renders at 1/8 scale, rounded to multiples of 16.
EXPECTED_SIZE = (112, 64)
TINY_JOB = ["--param", "num_inference_steps=2", "--param", "resolution=480p", "--param", "aspect_ratio=16:9"]
SUBMITTED = re.compile(r"Submitted fal-ai/wan-i2v: request (\S+)")


def environment(server: FramecastServer) -> dict[str, str]:
    """The user's shell: the key and the private CA by environment, nothing else of fal's or ours."""
    assert server.api_key is not None
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("FAL_", "FRAMECAST_", "SSL_CERT"))}
    return {**keep, "FAL_KEY": server.api_key, "SSL_CERT_FILE": str(server.ca_path)}


def command(server: FramecastServer, image: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "framecast", "run", ENDPOINT, "--server", server.url, "--image", str(image),
            "--prompt", "a cat walking in the snow", "--out", str(out), *TINY_JOB, *extra]  # fmt: skip


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "first frame.png"
    Image.new("RGB", (96, 64), (30, 120, 200)).save(path)
    return path


class Running:
    """The CLI as a child process whose stderr is read line by line, so a test can wait on what it printed."""

    def __init__(self, arguments: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            arguments, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for_line(self, pattern: str, timeout_s: float = 120) -> re.Match[str]:
        """The first stderr line (from here on) that matches `pattern`."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the CLI ended without printing {pattern!r}:\n{''.join(self.stderr)}")
            self.stderr.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        """(exit code, stdout, all of stderr)."""
        returncode = self.process.wait(timeout=timeout_s)
        self.reader.join(timeout=10)
        while (line := self.lines.get_nowait() if not self.lines.empty() else None) is not None:
            self.stderr.append(line)
        assert self.process.stdout is not None
        return returncode, self.process.stdout.read(), "".join(self.stderr)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def server_status(server: FramecastServer, request_id: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}/status")
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


def test_run_saves_the_video_and_prints_the_result(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    completed = subprocess.run(
        command(server, image, out, "--param", "seed=1234", "--logs"),
        env=environment(server),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["seed"] == 1234
    assert result["video"]["url"].startswith(f"{server.url}/files/outputs/")
    assert result["video"]["file_size"] == out.stat().st_size
    assert not out.with_name("video.mp4.part").exists()
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        assert (frames, (stream.codec_context.width, stream.codec_context.height)) == (81, EXPECTED_SIZE)

    stderr = completed.stderr
    assert SUBMITTED.search(stderr)
    # Not a terminal, so the bar comes as plain lines: step/total, percent, ETA.
    assert re.search(r"In progress \[[#-]+\] [12]/2 steps +\d+%  ETA \d+:\d\d", stderr), stderr
    # --logs: the server's log lines, each once.
    step_logs = re.findall(r"^\d\d:\d\d:\d\d INFO  Step 1/2, ETA", stderr, flags=re.MULTILINE)
    assert len(step_logs) == 1, stderr
    assert "Step 2/2" in stderr
    assert re.search(r"Completed in \d+\.\ds", stderr)
    assert f"Saved {out}" in stderr


def test_end_image_goes_to_the_field_the_schema_names(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    """wan-flf2v takes start_image_url/end_image_url; the key and CA come by flag, not environment."""
    end_image = tmp_path / "last.png"
    Image.new("RGB", (96, 64), (200, 60, 20)).save(end_image)
    out = tmp_path / "flf.mp4"
    assert server.api_key is not None
    env = {k: v for k, v in environment(server).items() if k not in ("FAL_KEY", "SSL_CERT_FILE")}
    completed = subprocess.run(
        [sys.executable, "-m", "framecast", "run", "fal-ai/wan-flf2v", "--server", f"localhost:{server.port}/queue",
         "--key", server.api_key, "--ca-file", str(server.ca_path), "--image", str(image), "--end-image",
         str(end_image), "--prompt", "a cat", "--out", str(out), *TINY_JOB, "--json"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result["metadata"]["model"].endswith("wan21_flf2v")
    events = [json.loads(line) for line in completed.stderr.splitlines()]
    assert events[0]["event"] == "submitted"  # the schema was found: no "schema" note
    assert events[-1] == {"event": "saved", "path": str(out), "bytes": out.stat().st_size}
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 81


def test_a_failed_job_prints_its_error_and_exits_1(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    out = tmp_path / "video.mp4"
    fault = "--header", "X-Framecast-Test-Fault: raise_at_step=1"
    completed = subprocess.run(
        command(server, image, out, *fault), env=environment(server), capture_output=True, text=True, timeout=240
    )
    assert completed.returncode == 1, completed.stderr
    body = json.loads(completed.stdout)
    assert "Injected test fault at step 1" in json.dumps(body)
    assert re.search(r"Failed \(500, internal_server_error\): .*Injected test fault", completed.stderr)
    assert not out.exists()


def test_a_refused_input_prints_the_422_and_exits_1(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    completed = subprocess.run(
        command(server, image, tmp_path / "v.mp4", "--param", "resolution=999p", "--json"),
        env=environment(server),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 1, completed.stderr
    detail = json.loads(completed.stdout)["detail"]
    assert any(error["loc"][-1] == "resolution" for error in detail)
    events = [json.loads(line) for line in completed.stderr.splitlines()]
    assert events[-1] == {"event": "refused", "status_code": 422}


def test_ctrl_c_cancels_the_job_on_the_server(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    held = "--header", "X-Framecast-Test-Fault: block_at_step=1"
    cli = Running(command(server, image, tmp_path / "video.mp4", *held), environment(server))
    try:
        request_id = cli.wait_for_line(SUBMITTED.pattern).group(1)
        # The job is running and held at step 1: the CLI shows the bar for it.
        cli.wait_for_line(r"In progress \[#+-+\] 1/2 steps")
        cli.process.send_signal(signal.SIGINT)
        returncode, stdout, stderr = cli.finish(timeout_s=60)
    finally:
        cli.kill()
    assert returncode == 130, stderr
    assert stdout == ""
    assert f"Cancelling {request_id} on the server" in stderr
    assert "Cancel requested; waiting up to 15s" in stderr
    assert f"Cancelled {request_id} on the server." in stderr
    status = server_status(server, request_id)
    assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")


def test_a_second_ctrl_c_quits_at_once(server: FramecastServer, image: Path, tmp_path: Path) -> None:
    # The engine ignores the cancel, so the CLI would wait for the server's grace period (5 s here).
    stubborn = "--header", "X-Framecast-Test-Fault: ignore_cancel_at_step=1"
    cli = Running(command(server, image, tmp_path / "video.mp4", *stubborn), environment(server))
    try:
        request_id = cli.wait_for_line(SUBMITTED.pattern).group(1)
        cli.wait_for_line(r"In progress \[#+-+\] 1/2 steps")
        cli.process.send_signal(signal.SIGINT)
        cli.wait_for_line(r"Cancel requested; waiting .*Ctrl-C again")
        interrupted_at = time.monotonic()
        cli.process.send_signal(signal.SIGINT)
        returncode, _stdout, stderr = cli.finish(timeout_s=30)
        quit_after_s = time.monotonic() - interrupted_at
    finally:
        cli.kill()
    assert returncode == 130, stderr
    assert quit_after_s < 3, stderr
    assert "Interrupted again" in stderr
    assert f"Cancelled {request_id}" not in stderr
    # The server still cancels it (SIGKILLing the stubborn engine); wait, so later tests get a ready worker.
    wait_for(
        lambda: server_status(server, request_id)["status"] == "COMPLETED", timeout_s=60, what="the job to be cancelled"
    )
    assert server_status(server, request_id)["error_type"] == "client_cancelled"
    server.wait_ready()
