"""Start the real `framecast serve` CLI on a free port over TLS, as a user would (vLLM's RemoteOpenAIServer)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

SERVER_START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) for localhost and 127.0.0.1, made with trustme."""
    import trustme

    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA()
    certificate = authority.issue_cert("localhost", "127.0.0.1")
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    authority.cert_pem.write_to_path(str(ca_path))
    certificate.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in certificate.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    certificate.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.05, what: str = "condition"
) -> Any:
    """Poll `predicate` until it returns something truthy; the value is returned. Raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


class FramecastServer:
    def __init__(
        self,
        *,
        data_dir: Path,
        certificates: tuple[Path, Path, Path],
        port: int | None = None,
        workers: int = 1,
        extra_arguments: list[str] | None = None,
        log_path: Path | None = None,
        create_key: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.ca_path, self.cert_path, self.key_path = certificates
        self.port = port or free_port()
        self.workers = workers
        self.extra_arguments = extra_arguments or []
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        # Made with the real `framecast keys create` before the first start; kept across restarts.
        self.api_key: str | None = None
        self.create_key = create_key

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def client(self, *, authenticated: bool = True) -> httpx.Client:
        headers = {"Authorization": f"Key {self.api_key}"} if authenticated and self.api_key else {}
        return httpx.Client(base_url=self.url, verify=str(self.ca_path), timeout=30, headers=headers)

    def create_api_key(self, name: str = "tests") -> str:
        """A new key from the real CLI, against this server's database; the CLI prints only the key."""
        completed = subprocess.run(
            [sys.executable, "-m", "framecast", "keys", "create", "--name", name, "--data-dir", str(self.data_dir),
             "--quiet", *self.database_arguments()],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return completed.stdout.strip()

    def database_arguments(self) -> list[str]:
        for index, argument in enumerate(self.extra_arguments):
            if argument == "--db":
                return ["--db", self.extra_arguments[index + 1]]
        return []

    def start(self) -> FramecastServer:
        arguments = [
            sys.executable, "-m", "framecast", "serve",
            "--models", "tiny",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--ssl-certfile", str(self.cert_path),
            "--ssl-keyfile", str(self.key_path),
            "--test-faults",
            "--allow-private-fetch",
            "--log-level", "warning",
            "--torch-threads", "1",
            *self.extra_arguments,
        ]  # fmt: skip
        if self.api_key is None and self.create_key and "--no-auth" not in self.extra_arguments:
            self.api_key = self.create_api_key()
        environment = {key: value for key, value in os.environ.items() if not key.startswith("FRAMECAST_")}
        environment["HF_HUB_OFFLINE"] = "1"
        log = self.log_path.open("ab")
        # A session of its own, so a test can SIGKILL the server without hitting pytest.
        self.process = subprocess.Popen(arguments, stdout=log, stderr=log, env=environment, start_new_session=True)
        log.close()
        self.wait_ready()
        return self

    def health(self) -> dict[str, Any] | None:
        try:
            with self.client() as client:
                response = client.get("/health")
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def wait_ready(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"framecast serve exited with {self.process.returncode}; see {self.log_path}")
            health = self.health()
            if health is None:
                return None
            workers = [worker for worker in health["workers"] if worker["state"] == "ready"]
            return health if len(workers) >= self.workers else None

        result: dict[str, Any] = wait_for(ready, timeout_s=SERVER_START_TIMEOUT_S, what="server and workers ready")
        return result

    def worker_pids(self) -> list[int]:
        health = self.health() or {"workers": []}
        return [int(worker["worker_id"].split(":")[1]) for worker in health["workers"]]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server process only; its workers must notice and die on their own."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def run_with_fal_client(server: FramecastServer, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The unmodified fal-client in a process of its own (it reads its hosts at import), configured for `server`.

    `jobs` is `[{"endpoint", "arguments"}, ...]`; returns `[{"request_id", "result"|"error"}, ...]`
    (tests/e2e/fal_subprocess.py).
    """
    environment = {
        **os.environ,
        "FAL_KEY": server.api_key or "",
        "FAL_QUEUE_RUN_HOST": f"localhost:{server.port}/queue",
        "FAL_RUN_HOST": f"localhost:{server.port}/run",
        "SSL_CERT_FILE": str(server.ca_path),
    }
    completed = subprocess.run(
        [sys.executable, "-m", "tests.e2e.fal_subprocess"],
        input=json.dumps(jobs), capture_output=True, text=True, env=environment, timeout=600, check=True,
    )  # fmt: skip
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    return results
