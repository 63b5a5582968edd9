"""Scale-out for real: API replicas and `framecast worker` processes sharing PostgreSQL and an S3 bucket.

One cluster per module: a fresh PostgreSQL database (tests/postgres_server.py), a bucket on moto's S3 server
(tests/s3_server.py), two `framecast serve --workers 0` replicas and four `framecast worker` processes, each
with a data directory of its own, so nothing is shared but the database and the bucket. The workers serve
fal-ai/wan-i2v on the tiny Wan model at 1/32 of 480p (tests/system/cluster.py), so a job is about half a
second of CPU and still takes the whole real path.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from framecast.store.blobs import BLOB_SCHEME
from tests.e2e.server import FramecastServer, wait_for
from tests.postgres_server import PostgresServer
from tests.s3_server import S3Server
from tests.system.cluster import (
    WorkerProcess,
    job_input,
    prepare_data_dir,
    ready_worker_pids,
    result_path,
    status_path,
    submit_path,
)
from tests.webhook_receiver import WebhookReceiver, verify_fal_webhook

pytestmark = pytest.mark.e2e

WORKER_COUNT = 4
STARTED_ON = re.compile(r"^Started on worker (\S+) \(attempt (\d+)\)$")


@dataclass
class Cluster:
    database_url: str
    bucket: str
    replicas: list[FramecastServer]
    workers: list[WorkerProcess]
    s3: S3Server

    def bucket_keys(self) -> set[str]:
        pages = self.s3.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.database_url.replace("postgresql://", "postgresql+psycopg://", 1))

    def scalar(self, query: str, **parameters: Any) -> Any:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return connection.execute(sa.text(query), parameters).scalar()
        finally:
            engine.dispose()

    def rows(self, query: str, **parameters: Any) -> list[sa.Row[Any]]:
        engine = self.engine()
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(query), parameters))
        finally:
            engine.dispose()

    def live_replica(self) -> FramecastServer:
        return next(replica for replica in self.replicas if replica.health() is not None)

    def wait_workers_ready(self, count: int) -> None:
        wait_for(
            lambda: len(ready_worker_pids(self.live_replica().health()) & {w.pid for w in self.workers}) >= count,
            timeout_s=180,
            what=f"{count} workers ready",
        )


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    certificates: tuple[Path, Path, Path],
    tiny_models: Path,
    postgres_server: PostgresServer,
    s3_server: S3Server,
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("scale-out")
    database_url = postgres_server.create_database()
    bucket = "framecast-scale-out"
    s3_server.client.create_bucket(Bucket=bucket)
    shared = [
        "--db", database_url,
        "--storage", f"s3://{bucket}/media",
        "--s3-endpoint-url", s3_server.endpoint_url,
        "--s3-region", "us-east-1",
        "--s3-access-key-id", "framecast-test-key",
        "--s3-secret-access-key", "framecast-test-secret",
    ]  # fmt: skip
    replicas: list[FramecastServer] = []
    workers: list[WorkerProcess] = []
    try:
        for index in range(2):
            data = prepare_data_dir(base / f"replica-{index}", tiny_models)
            replica = FramecastServer(
                data_dir=data.data_dir,
                certificates=certificates,
                workers=0,
                extra_arguments=[*shared, "--models", str(data.bindings), "--lease-s", "5"],
            )
            if replicas:
                replica.api_key = replicas[0].api_key  # one database, so one set of keys for every replica
            replicas.append(replica.start())
        for index in range(WORKER_COUNT):
            data = prepare_data_dir(base / f"worker-{index}", tiny_models)
            worker = WorkerProcess(
                name=f"worker-{index}",
                data=data,
                log_path=base / f"worker-{index}.log",
                extra_arguments=[*shared, "--lease-s", "5"],
            )
            workers.append(worker.start())
        instance = Cluster(database_url, bucket, replicas, workers, s3_server)
        instance.wait_workers_ready(WORKER_COUNT)
        yield instance
    finally:
        for worker in workers:
            worker.stop()
        for replica in replicas:
            replica.stop()
        postgres_server.drop_database(database_url)


def submit(replica: FramecastServer, index: int, *, fault: str | None = None, webhook: str | None = None) -> str:
    headers = {"X-Framecast-Test-Fault": fault} if fault else {}
    params = {"fal_webhook": webhook} if webhook else {}
    with replica.client() as client:
        response = client.post(submit_path(), json=job_input(f"job {index}", index), headers=headers, params=params)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["request_id"]
    return request_id


def wait_all_completed(cluster: Cluster, request_ids: list[str], timeout_s: float) -> None:
    wait_for(
        lambda: (
            cluster.scalar(
                "SELECT count(*) FROM jobs WHERE status = 'COMPLETED' AND request_id = ANY(:ids)", ids=request_ids
            )
            == len(request_ids)
        ),
        timeout_s=timeout_s,
        interval_s=0.25,
        what=f"{len(request_ids)} jobs COMPLETED",
    )


def starts(cluster: Cluster, request_id: str) -> list[tuple[str, int]]:
    """(worker id, attempt) of every start of the job, from its log."""
    messages = cluster.rows(
        "SELECT message FROM job_events WHERE request_id = :id AND message LIKE 'Started on worker %' ORDER BY id",
        id=request_id,
    )
    matches = [STARTED_ON.match(row.message) for row in messages]
    return [(match.group(1), int(match.group(2))) for match in matches if match]


def test_four_workers_claim_200_jobs_each_exactly_once(cluster: Cluster) -> None:
    # Half the jobs through each replica, eight submitters at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        request_ids = list(pool.map(lambda index: submit(cluster.replicas[index % 2], index), range(200)))
    assert len(set(request_ids)) == 200
    wait_all_completed(cluster, request_ids, timeout_s=420)

    outcomes = cluster.rows(
        "SELECT request_id, outcome_status_code, attempts, outcome_body FROM jobs WHERE request_id = ANY(:ids)",
        ids=request_ids,
    )
    assert len(outcomes) == 200, "no loss"
    assert {row.outcome_status_code for row in outcomes} == {200}
    assert {row.attempts for row in outcomes} == {1}, "no job claimed twice"
    started_by: Counter[str] = Counter()
    for request_id in request_ids:
        (start,) = starts(cluster, request_id)  # exactly one start per job: no duplicate
        started_by[start[0]] += 1
    assert sum(started_by.values()) == 200
    assert len(started_by) == WORKER_COUNT, f"all four workers took jobs: {dict(started_by)}"

    # Every job has its own video in the bucket.
    references = {json.loads(row.outcome_body)["video"]["url"] for row in outcomes}
    assert len(references) == 200
    assert all(reference.startswith(BLOB_SCHEME) for reference in references)
    in_bucket = cluster.bucket_keys()
    assert {f"media/{reference[len(BLOB_SCHEME) :]}" for reference in references} <= in_bucket
    with cluster.replicas[1].client() as client:
        result = client.get(result_path(request_ids[0]))
    assert result.status_code == 200
    video_url = result.json()["video"]["url"]
    assert "X-Amz-Signature=" in video_url, "S3 results are presigned when read"
    assert httpx.get(video_url, timeout=30).content[4:8] == b"ftyp"


def test_a_worker_killed_mid_job_has_its_job_reclaimed_by_another(cluster: Cluster) -> None:
    replica = cluster.replicas[0]
    request_id = submit(replica, 1000, fault="block_once_at_step=1")
    wait_for(
        lambda: (
            cluster.scalar(
                "SELECT count(*) FROM job_events WHERE request_id = :id AND message LIKE '%holding at step%'",
                id=request_id,
            )
            == 1
        ),
        timeout_s=120,
        what="the job holding on its first worker",
    )
    ((first_worker, attempt),) = starts(cluster, request_id)
    assert attempt == 1
    # Worker ids are host:pid:token.
    victim = next(worker for worker in cluster.workers if worker.pid == int(first_worker.split(":")[1]))
    victim.kill()

    wait_all_completed(cluster, [request_id], timeout_s=120)
    history = starts(cluster, request_id)
    assert [attempt for _worker, attempt in history] == [1, 2]
    assert history[1][0] != first_worker, "another worker finished it"
    with replica.client() as client:
        status = client.get(status_path(request_id), params={"logs": 1}).json()
        result = client.get(result_path(request_id))
    messages = [entry["message"] for entry in status["logs"]]
    assert any(f"Worker {first_worker} was lost; back in the queue" in message for message in messages)
    assert result.status_code == 200

    victim.start()  # back to four for the tests after this one
    cluster.wait_workers_ready(WORKER_COUNT)


def read_stream(replica: FramecastServer, request_id: str) -> list[dict[str, Any]]:
    """The SSE status stream until it ends (it closes after COMPLETED)."""
    events: list[dict[str, Any]] = []
    with (
        replica.client() as client,
        client.stream("GET", status_path(request_id) + "/stream", params={"logs": 1}, timeout=120) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[len("data:") :]))
    return events


def test_when_a_replica_dies_another_serves_status_and_sse_for_its_jobs(cluster: Cluster) -> None:
    doomed, survivor = cluster.replicas
    request_ids = [submit(doomed, 2000 + index) for index in range(6)]
    doomed.kill()
    assert doomed.health() is None

    events = read_stream(survivor, request_ids[-1])
    assert events[-1]["status"] == "COMPLETED"
    assert events[-1]["request_id"] == request_ids[-1]
    wait_all_completed(cluster, request_ids, timeout_s=120)
    with survivor.client() as client:
        for request_id in request_ids:
            status = client.get(status_path(request_id))
            assert (status.status_code, status.json()["status"]) == (200, "COMPLETED")
            result = client.get(result_path(request_id))
            assert result.status_code == 200
            # URLs point at the replica that answers, never at the dead one.
            assert str(doomed.port) not in status.json()["response_url"]

    doomed.start()  # restarted on the same port, for the tests after this one


def test_each_webhook_is_delivered_once_however_many_replicas_run(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        assert replica.health() is not None, "both replicas run a webhook sender"
    receiver = WebhookReceiver().start()
    try:
        request_ids = [
            submit(cluster.replicas[index % 2], 3000 + index, webhook=f"{receiver.url}?job={index}")
            for index in range(20)
        ]
        wait_all_completed(cluster, request_ids, timeout_s=180)
        # Once a delivery is recorded as delivered, no sender picks it up again: then the count is final.
        wait_for(
            lambda: (
                cluster.scalar(
                    "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered' AND request_id = ANY(:ids)",
                    ids=request_ids,
                )
                == len(request_ids)
            ),
            timeout_s=120,
            what="every webhook recorded as delivered",
        )
        received = list(receiver.received)
    finally:
        receiver.stop()
    per_request = Counter(webhook.headers["x-fal-webhook-request-id"] for webhook in received)
    assert per_request == dict.fromkeys(request_ids, 1), "exactly one delivery per job"
    attempts = cluster.rows("SELECT attempts FROM webhook_deliveries WHERE request_id = ANY(:ids)", ids=request_ids)
    assert {row.attempts for row in attempts} == {1}
    with cluster.replicas[0].client(authenticated=False) as client:
        jwks = client.get("/.well-known/jwks.json").json()
    assert all(verify_fal_webhook(webhook.headers, webhook.body, jwks) for webhook in received)
