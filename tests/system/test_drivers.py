"""The drivers' own arithmetic, verdicts and client logic, without a server."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from tests.system.chaos import API, ChaosConfig, ChaosReport, ChaosRun, KillEvent
from tests.system.cluster import Latency, error_kind
from tests.system.load import LoadConfig, LoadReport


def test_latency_percentiles_interpolate_between_ranks() -> None:
    latency = Latency.of([value / 1000 for value in range(1, 101)])  # 1..100 ms
    assert latency.count == 100
    assert latency.p50_ms == pytest.approx(50.5)
    assert latency.p95_ms == pytest.approx(95.05)
    assert latency.p99_ms == pytest.approx(99.01)
    assert latency.max_ms == pytest.approx(100)


def test_latency_of_no_sample_or_one() -> None:
    assert Latency.of([]).count == 0
    assert math.isnan(Latency.of([]).p99_ms)
    assert Latency.of([0.25]) == Latency(1, 250, 250, 250, 250)


def test_error_kinds_name_the_operation_and_the_failure() -> None:
    response = httpx.Response(503, request=httpx.Request("GET", "https://localhost/x"))
    assert error_kind("submit", response) == "submit: HTTP 503"
    assert error_kind("status", httpx.ReadTimeout("slow")) == "status: ReadTimeout"


def test_a_load_run_passes_only_with_zero_errors_and_every_job_completed() -> None:
    config = LoadConfig(jobs=3)
    assert LoadReport(config=config, submitted=3, completed=3).problems() == []
    assert LoadReport(config=config, submitted=3, completed=2).problems() == ["2 of 3 jobs completed with a video"]
    failed = LoadReport(config=config, submitted=3, completed=3, errors={"status: HTTP 500": 2})
    assert failed.problems() == ["2 x status: HTTP 500"]
    logged = LoadReport(config=config, submitted=3, completed=3, server_log_problems=["x ERROR y"])
    assert logged.problems() == ["server log: x ERROR y"]


def kill(target: str) -> KillEvent:
    return KillEvent(
        at_s=1.0, target=target, pid=1, doing="idle", jobs_submitted=0, jobs_done=0, waited_s=0.0, restart_s=0.0
    )


def test_a_chaos_run_allows_one_orphan_output_per_worker_kill_and_no_more() -> None:
    config = ChaosConfig(jobs=2)
    kills = [kill(API), kill("worker-0")]
    assert ChaosReport(config=config, kills=kills, jobs_completed=2, orphan_outputs=1).problems() == []
    too_many = ChaosReport(config=config, kills=kills, jobs_completed=2, orphan_outputs=2).problems()
    assert too_many == ["2 orphan outputs, more than the 1 worker kills"]


def test_a_chaos_run_fails_on_any_loss_double_or_missing_webhook_but_not_on_duplicate_deliveries() -> None:
    config = ChaosConfig(jobs=2)
    assert ChaosReport(config=config, jobs_completed=2, webhook_duplicates=3).problems() == []
    report = ChaosReport(
        config=config,
        jobs_completed=1,
        lost=["r1: HTTP 503"],
        duplicate_jobs=["'p' is 2 jobs on the server"],
        changed_results=["r2: a then b"],
        undelivered=["r2"],
        client_errors={"status: HTTP 500": 1},
    )
    assert report.problems() == [
        "lost: r1: HTTP 503",
        "submitted twice: 'p' is 2 jobs on the server",
        "result changed: r2: a then b",
        "client: 1 x status: HTTP 500",
        "webhook never accepted: r2",
        "1 of 2 jobs completed with a video",
    ]


class FakeApi:
    """An httpx transport that plays the API for the chaos client: cut-off submits, a history, new jobs."""

    def __init__(self, history: list[str], cut_off: int = 0) -> None:
        self.history = history  # prompts of the jobs the server has
        self.cut_off = cut_off  # submits to cut off after they were sent (the API died mid-request)
        self.posts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/api/requests":
            entries = [{"request_id": f"id-{prompt}", "input": {"prompt": prompt}} for prompt in self.history]
            return httpx.Response(200, json={"requests": entries})
        assert request.method == "POST"
        prompt = json.loads(request.content)["prompt"]
        self.posts.append(prompt)
        self.history.append(prompt)  # the server made the job...
        if self.cut_off:
            self.cut_off -= 1
            raise httpx.RemoteProtocolError("Server disconnected without sending a response", request=request)
        return httpx.Response(200, json={"request_id": f"id-{prompt}"})


def chaos_client(api: FakeApi) -> tuple[ChaosRun, httpx.Client]:
    run = ChaosRun(cluster=None, config=ChaosConfig(jobs=2))  # type: ignore[arg-type]
    return run, httpx.Client(base_url="https://api", transport=httpx.MockTransport(api))


def test_the_chaos_client_adopts_a_cut_off_submit_that_the_server_made_instead_of_sending_it_twice() -> None:
    api = FakeApi(history=[], cut_off=1)
    run, client = chaos_client(api)
    job = run.jobs[0]
    assert not run.submit(client, job)  # ...but the answer was lost
    assert job.ambiguous and job.request_id is None
    assert run.submit(client, job)
    assert job.request_id == f"id-{job.prompt}"
    assert api.posts == [job.prompt], "sent once"
    assert run.report.adopted_from_history == 1


def test_the_chaos_client_sends_a_cut_off_submit_again_when_the_server_never_made_the_job() -> None:
    api = FakeApi(history=[])
    run, client = chaos_client(api)
    job = run.jobs[1]
    job.ambiguous = True  # cut off before the server stored anything
    assert run.submit(client, job)
    assert api.posts == [job.prompt]
    assert job.request_id == f"id-{job.prompt}"
    assert run.report.adopted_from_history == 0
