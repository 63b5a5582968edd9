"""Tie a child's life to its parent's (Linux), so no GPU process outlives a SIGKILLed worker."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent_pid: int | None = None) -> None:
    """Ask the kernel to SIGKILL us when our parent dies; exit now if it already has."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before prctl took effect; we would then be orphaned for good.
    if expected_parent_pid is not None and os.getppid() != expected_parent_pid:
        os._exit(1)
