"""Worker ids carry host and pid, so a reaper on the same host can tell a dead worker at once."""

from __future__ import annotations

import os
import secrets
import socket


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def is_worker_alive(worker_id: str) -> bool:
    """False only when the worker is certainly gone: same host, and its pid no longer exists.

    Workers on other hosts (or ids in another form) count as alive; their leases expire instead.
    """
    parts = worker_id.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return True
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _is_zombie(int(parts[1])) is not True


def _is_zombie(pid: int) -> bool | None:
    # A SIGKILLed child that its parent has not reaped yet still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return None
