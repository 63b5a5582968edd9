"""The relay worker's decisions that a live upstream cannot provoke: the crash window around a submit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from framecast.bindings import ModelBinding
from framecast.relay.client import FalQueueClient, UpstreamError
from framecast.relay.worker import RelayedJob, RelayWorker
from framecast.store.blobs import LocalBlobStore
from framecast.store.jobs import NewJob
from framecast.store.sql_jobs import SqlJobStore

pytestmark = pytest.mark.anyio
ENDPOINT = "fal-ai/veo2/image-to-video"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class NoSubmit(FalQueueClient):
    def __init__(self) -> None:
        super().__init__("https://upstream.invalid/queue", "key")
        self.submitted = 0

    async def submit(self, endpoint_id: str, arguments: dict[str, Any], *, headers: dict[str, str]) -> Any:
        self.submitted += 1
        raise UpstreamError("refused", status_code=422, body={"detail": [{"loc": ["body", "prompt"], "msg": "bad"}]})


def make_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RelayWorker, SqlJobStore, NoSubmit]:
    monkeypatch.setenv("UPSTREAM_KEY", "k")
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    binding = ModelBinding(ENDPOINT, "relay", "https://upstream.invalid/queue", options={"key_env": "UPSTREAM_KEY"})
    worker = RelayWorker(
        store=store,
        blobs=LocalBlobStore(tmp_path / "files"),
        bindings=[binding],
        lease_s=30,
        cancel_grace_s=5,
        tmp_dir=tmp_path / "tmp",
    )
    client = NoSubmit()
    worker.clients[(binding.weights, "UPSTREAM_KEY", None)] = client
    return worker, store, client


async def test_an_interrupted_submit_is_never_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, store, client = make_worker(tmp_path, monkeypatch)
    store.create_job(NewJob("r1", ENDPOINT, {"input": {"prompt": "p"}}))
    first = store.claim_job(worker_id="gone", endpoint_ids=[ENDPOINT], lease_s=1, now=time.time())
    assert first is not None
    # The first attempt wrote its marker, then died before the upstream answered.
    store.set_upstream("r1", first.lease_token, {"state": "submitting"})
    store.reap(now=time.time() + 2, is_worker_alive=lambda _worker: False)
    again = store.claim_job(worker_id=worker.worker_id, endpoint_ids=[ENDPOINT], lease_s=30, now=time.time())
    assert again is not None
    await worker.relay(again)
    record = store.get_job("r1")
    assert record is not None and record.outcome is not None
    assert (record.outcome.status_code, record.outcome.error_type) == (502, "upstream_unknown")
    assert "not submitting again" in (record.outcome.error or "")
    assert client.submitted == 0


async def test_an_upstream_refusal_keeps_its_status_and_detail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, store, client = make_worker(tmp_path, monkeypatch)
    store.create_job(NewJob("r2", ENDPOINT, {"input": {"prompt": "p", "negative": None}}))
    claimed = store.claim_job(worker_id=worker.worker_id, endpoint_ids=[ENDPOINT], lease_s=30, now=time.time())
    assert claimed is not None
    await RelayedJob(worker, claimed).run()
    record = store.get_job("r2")
    assert record is not None and record.outcome is not None
    assert record.outcome.status_code == 422
    assert record.outcome.body == {
        "detail": [{"loc": ["body", "prompt"], "msg": "bad"}],
        "error_type": "upstream_error",
    }
    assert client.submitted == 1
    assert record.upstream == {"state": "submitting", "upstream": f"https://upstream.invalid/queue/{ENDPOINT}"}


def test_a_missing_key_marks_the_endpoint_unusable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    worker, store, _ = make_worker(tmp_path, monkeypatch)
    monkeypatch.delenv("UPSTREAM_KEY")
    assert worker.report() == ()
    (record,) = store.list_workers(alive_after=0)
    endpoint = record.endpoints[ENDPOINT]
    assert (endpoint.state, endpoint.error) == (
        "engine_error",
        "the upstream key is missing: set UPSTREAM_KEY for the server",
    )
