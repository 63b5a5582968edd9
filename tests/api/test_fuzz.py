"""Fuzz every operation of the server's OpenAPI document with schemathesis, in-process, with a valid API key.

Each response must not be a 5xx, and its status code, content type and body must be the ones the document
declares. The short tier (10 examples per operation) runs in the normal suite; the long tier is the same test with
more examples, plus schemathesis' coverage phase (boundary values and every way to break each field):

    FRAMECAST_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/api/test_fuzz.py -q

Generation is deterministic (the same cases on every run), so a failure in CI reproduces locally.

Nothing may hang the fuzzer. The operations that wait for a job to finish (the sync run `POST /run/...`, and
WaveSpeed's submit with `enable_sync_mode`) go to an app whose readiness look says no worker serves anything, so
they answer their documented 503 at once; every other operation goes to an app where every endpoint takes jobs,
so submissions run the whole input pipeline (image URLs included) and may queue jobs that nothing runs. The
status stream (`.../status/stream`) of a made-up request id is a 404 at once, and every request carries a
timeout, so a hang is a failure rather than a stuck suite. No test here reaches beyond loopback: the network
guard refuses DNS look-ups and outside connections, so image URLs fail fast as unreachable.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openapi_spec_validator
import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from framecast.app import create_app
from framecast.settings import Settings
from framecast.store.sql_jobs import SqlJobStore
from tests.api.conftest import make_api_key
from tests.inputs import NetworkGuard

SHORT_TIER_EXAMPLES = 10
EXAMPLES_PER_OPERATION = int(os.environ.get("FRAMECAST_FUZZ_EXAMPLES", str(SHORT_TIER_EXAMPLES)))
# The long tier adds schemathesis' coverage phase: boundary values and each way to break every field, per operation
# (about a minute and a half on its own, so not in the short tier).
LONG_TIER = EXAMPLES_PER_OPERATION > SHORT_TIER_EXAMPLES
REQUEST_TIMEOUT_S = 10.0
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The operations that wait for a job's end: sync runs, and WaveSpeed's submit (its body may ask for sync mode).
WAITING_PATHS = r"^/run/|^/api/v3/\{model_id\}$"
NOT_READY = "no worker serves this endpoint: the fuzzer runs none"


def build_app(data_dir: Path, store: SqlJobStore, *, ready: bool) -> FastAPI:
    settings = Settings(data_dir=data_dir, public_url="https://gpu.example.com", max_upload_bytes=64 * 1024)
    return create_app(settings, store=store, readiness=lambda _endpoint: None if ready else NOT_READY)


def load_document() -> dict[str, Any]:
    """The OpenAPI document, from a throwaway app: pytest parametrises the test by operation when it collects."""
    with tempfile.TemporaryDirectory() as name:
        data_dir = Path(name)
        return build_app(data_dir, SqlJobStore(f"sqlite:///{data_dir / 'jobs.db'}"), ready=True).openapi()


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES_PER_OPERATION,
            # Reproducible in CI: the same cases on every run, and no example database kept between runs.
            "deterministic": True,
            "database": "none",
        },
        "phases": {"coverage": {"enabled": LONG_TIER}, "stateful": {"enabled": False}},
        "request-timeout": REQUEST_TIMEOUT_S,
        "operations": [
            {
                # Their app has no worker on purpose (see above): the 503 is documented and expected there.
                "include-path-regex": WAITING_PATHS,
                "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}},
            }
        ],
    }
)
schema = schemathesis.openapi.from_dict(load_document(), config=CONFIG)


@dataclass(frozen=True)
class FuzzedServer:
    ready_app: FastAPI
    idle_app: FastAPI
    headers: dict[str, str]

    def app_for(self, case: schemathesis.Case[Any]) -> FastAPI:
        return self.idle_app if re.search(WAITING_PATHS, case.operation.path) else self.ready_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedServer]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        # Refuses (rather than records) every DNS look-up and connection beyond loopback: image URLs fail fast.
        NetworkGuard(monkeypatch)
        data_dir = tmp_path_factory.mktemp("fuzz")
        # Two apps on one database and one files directory: the same key works on both.
        store = SqlJobStore(f"sqlite:///{data_dir / 'jobs.db'}")
        ready_app = build_app(data_dir, store, ready=True)
        idle_app = build_app(data_dir, store, ready=False)
        key = make_api_key(store, "fuzz")
        yield FuzzedServer(ready_app, idle_app, {"Authorization": f"Key {key}"})
        # schemathesis starts each app's lifespan on its first request and keeps it for the process.
        asgi.shutdown_lifespans()


@schema.parametrize()
def test_every_operation_answers_as_documented(case: schemathesis.Case[Any], server: FuzzedServer) -> None:
    case.call_and_validate(app=server.app_for(case), headers=server.headers, checks=CHECKS, timeout=REQUEST_TIMEOUT_S)


def test_the_document_is_valid_openapi() -> None:
    """Unique operation ids and component names included (two owners of one alias once shared both)."""
    document = load_document()
    openapi_spec_validator.validate(document)
    operation_ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
