from __future__ import annotations

import os
import socket
import subprocess
import sys

from framecast.worker.identity import is_worker_alive, make_worker_id


def test_own_worker_id_is_alive() -> None:
    worker_id = make_worker_id()
    assert worker_id.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert is_worker_alive(worker_id)


def test_exited_process_on_this_host_is_dead() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    assert not is_worker_alive(f"{socket.gethostname()}:{process.pid}:abcdef")


def test_other_hosts_and_odd_ids_count_as_alive() -> None:
    assert is_worker_alive("another-host:1:abcdef")
    assert is_worker_alive("not-a-worker-id")
