"""No job is ever lost: real SIGKILLs of workers and of the whole server, then restarts."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e

SUBMIT = "/queue/fal-ai/wan-i2v"


def process_gone(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet (in a container, PID 1 may never reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def job_input(**overrides: Any) -> dict[str, Any]:
    return {
        "prompt": "a boat on a lake",
        "image_url": png_data_uri(),
        "resolution": "480p",
        "num_inference_steps": 2,
        **overrides,
    }


def submit(client: httpx.Client, fault: str | None = None) -> str:
    headers = {"X-Framecast-Test-Fault": fault} if fault else {}
    response = client.post(SUBMIT, json=job_input(), headers=headers)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def status(client: httpx.Client, request_id: str) -> dict[str, Any]:
    response = client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}/status", params={"logs": "1"})
    assert response.status_code in (200, 202), response.text
    body: dict[str, Any] = response.json()
    return body


def wait_completed(server: FramecastServer, request_id: str, timeout_s: float = 90) -> dict[str, Any]:
    def completed() -> dict[str, Any] | None:
        try:
            with server.client() as client:
                body = status(client, request_id)
        except httpx.TransportError:
            return None
        return body if body["status"] == "COMPLETED" else None

    result: dict[str, Any] = wait_for(completed, timeout_s=timeout_s, interval_s=0.1, what=f"{request_id} COMPLETED")
    return result


def wait_holding(server: FramecastServer, request_id: str, attempt: int = 1) -> None:
    def holding() -> bool:
        with server.client() as client:
            logs = status(client, request_id)["logs"] or []
        return sum("holding" in log["message"] for log in logs) >= attempt

    wait_for(holding, timeout_s=60, what=f"{request_id} to hold (attempt {attempt})")


@pytest.fixture
def durable_server(
    tmp_path: Path, certificates: tuple[Path, Path, Path], tiny_models: Path
) -> Iterator[FramecastServer]:
    instance = FramecastServer(
        data_dir=new_data_dir(tmp_path, tiny_models),
        certificates=certificates,
        extra_arguments=["--lease-s", "3", "--reaper-interval-s", "0.2", "--max-attempts", "2"],
    )
    instance.start()
    yield instance
    instance.stop()


def test_sigkilled_worker_loses_no_job(durable_server: FramecastServer) -> None:
    with durable_server.client() as client:
        request_id = submit(client, fault="block_once_at_step=1")
    wait_holding(durable_server, request_id)
    [worker_pid] = durable_server.worker_pids()
    os.kill(worker_pid, signal.SIGKILL)

    done = wait_completed(durable_server, request_id)
    assert done["error"] is None
    messages = [log["message"] for log in done["logs"]]
    assert any("was lost; back in the queue" in message for message in messages)
    assert sum(message.startswith("Started on worker") for message in messages) == 2
    with durable_server.client() as client:
        result = client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}")
    assert result.status_code == 200
    assert result.json()["video"]["file_size"] > 0


def test_out_of_attempts_fails_with_a_reason(durable_server: FramecastServer) -> None:
    with durable_server.client() as client:
        request_id = submit(client, fault="block_at_step=1")
    wait_holding(durable_server, request_id, 1)
    first_pids = durable_server.worker_pids()
    os.kill(first_pids[0], signal.SIGKILL)
    # The supervisor restarts the worker; the job is requeued and held again on the fresh one.
    wait_for(lambda: durable_server.worker_pids() not in ([], first_pids), timeout_s=60, what="a new worker")
    wait_holding(durable_server, request_id, 2)
    os.kill(durable_server.worker_pids()[0], signal.SIGKILL)
    done = wait_completed(durable_server, request_id)
    assert done["error_type"] == "runner_disconnected"
    assert "lost 2 times" in done["error"]
    with durable_server.client() as client:
        result = client.get(f"/queue/fal-ai/wan-i2v/requests/{request_id}")
    assert result.status_code == 503
    assert "lost 2 times" in result.json()["detail"]


def test_engine_process_crash_fails_the_job_and_the_worker_recovers(durable_server: FramecastServer) -> None:
    with durable_server.client() as client:
        crashed = submit(client, fault="exit_at_step=1")
        after = submit(client)
    done = wait_completed(durable_server, crashed)
    assert done["error_type"] == "runner_server_error"
    assert "exited with code 3" in done["error"]
    assert wait_completed(durable_server, after)["error"] is None


def test_sigkilled_server_restarts_with_every_job(durable_server: FramecastServer) -> None:
    with durable_server.client() as client:
        finished = submit(client)
    finished_status = wait_completed(durable_server, finished)
    assert finished_status["error"] is None
    with durable_server.client() as client:
        running = submit(client, fault="block_once_at_step=1")
        wait_holding(durable_server, running)
        queued = submit(client)
        finished_result = client.get(f"/queue/fal-ai/wan-i2v/requests/{finished}").json()
    worker_pids = durable_server.worker_pids()

    durable_server.kill()
    # The workers and their engine processes follow the server down (PR_SET_PDEATHSIG).
    wait_for(lambda: all(process_gone(pid) for pid in worker_pids), timeout_s=30, what="workers to exit")

    durable_server.start()
    for request_id in (running, queued):
        assert wait_completed(durable_server, request_id)["error"] is None
    with durable_server.client() as client:
        again = client.get(f"/queue/fal-ai/wan-i2v/requests/{finished}")
        assert again.status_code == 200
        assert again.json() == finished_result
        assert client.get(again.json()["video"]["url"]).status_code == 200
