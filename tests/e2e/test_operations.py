"""Operations on the real CLI: JSON log lines from every process naming the request, and GET /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import new_data_dir, png_data_uri
from tests.e2e.server import FramecastServer, wait_for

pytestmark = pytest.mark.e2e

ENDPOINT = "fal-ai/wan-i2v"


@pytest.fixture
def json_server(tmp_path: Path, certificates: tuple[Path, Path, Path], tiny_models: Path) -> Iterator[FramecastServer]:
    instance = FramecastServer(
        data_dir=new_data_dir(tmp_path, tiny_models),
        certificates=certificates,
        extra_arguments=["--log-format", "json", "--log-level", "info", "--metrics-public"],
    )
    instance.start()
    yield instance
    instance.stop()


def log_entries(server: FramecastServer) -> tuple[list[dict[str, Any]], list[str]]:
    """(the JSON objects, the lines that are not JSON objects)."""
    entries, others = [], []
    for line in server.log_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            others.append(line)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
        else:
            others.append(line)
    return entries, others


def test_json_logs_and_metrics_follow_a_job(json_server: FramecastServer) -> None:
    with json_server.client() as client:
        submitted = client.post(
            f"/queue/{ENDPOINT}",
            json={"prompt": "a lamp", "image_url": png_data_uri(), "resolution": "480p", "num_inference_steps": 2},
        )
        assert submitted.status_code == 200, submitted.text
        request_id = submitted.json()["request_id"]

        def completed() -> bool:
            response = client.get(f"/queue/{ENDPOINT}/requests/{request_id}/status")
            return bool(response.json()["status"] == "COMPLETED")

        wait_for(completed, timeout_s=120, what="the job to complete")
        assert client.get(f"/queue/{ENDPOINT}/requests/{request_id}").status_code == 200
        metrics = client.get("/metrics", headers={"Authorization": ""})
    assert metrics.status_code == 200

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.text)
        for sample in family.samples
    }
    assert samples[("framecast_jobs_finished_total", (("endpoint", ENDPOINT), ("outcome", "ok")))] == 1
    assert samples[("framecast_job_run_seconds_count", (("endpoint", ENDPOINT),))] == 1
    assert samples[("framecast_queue_depth", (("endpoint", ENDPOINT),))] == 0
    assert samples[("framecast_workers", (("state", "ready"),))] == 1
    # The tiny models run on CPU: no GPU memory series.
    assert not any(name.startswith("framecast_gpu_memory") for name, _labels in samples)

    def logged() -> tuple[list[dict[str, Any]], list[str]] | None:
        entries, others = log_entries(json_server)
        access = [entry for entry in entries if entry["logger"] == "uvicorn.access"]
        return (entries, others) if any(entry["path"] == "/metrics" for entry in access) else None

    entries, others = wait_for(logged, timeout_s=30, what="the access line of /metrics")
    assert others == [], "every line on stderr is a JSON object"
    about_job = [entry for entry in entries if entry["request_id"] == request_id]
    access = [(entry["method"], entry["status_code"]) for entry in about_job if entry["logger"] == "uvicorn.access"]
    assert ("POST", 200) in access and ("GET", 200) in access
    worker_lines = [entry for entry in about_job if entry["logger"] == "framecast.worker"]
    assert [line["message"].split()[0] for line in worker_lines] == ["running", "finished"]
    assert all(line["worker_id"].count(":") == 2 for line in worker_lines)
    assert all(entry["time"].endswith("Z") and entry["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
               for entry in entries)  # fmt: skip
