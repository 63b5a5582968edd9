"""What every bench script shares: medians, a plain-text table, and Linux CPU accounting."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A left-aligned first column, right-aligned numbers, and a rule under the headers."""
    cells = [headers, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def process_cpu_s(pid: int) -> float:
    """utime + stime of one process (Linux /proc), in seconds; NaN when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    # After the ")" of comm: fields[0] is state (field 3), so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def session_cpu_s(session_id: int) -> float:
    """utime + stime of every live process in one session (Linux /proc; a server started with
    `start_new_session=True` and its children), in seconds. Processes that already exited are not counted."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited while we looked
        # After the ")" of comm: fields[3] is the session id (field 6), utime and stime are at 11 and 12.
        if int(fields[3]) == session_id:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_stall_s() -> float:
    """Seconds during which some task on this machine waited for a CPU (Linux PSI); NaN where unavailable."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return float("nan")
    return int(line.rsplit("total=", 1)[1]) / 1e6


def quiet_offline_torch(threads: int) -> None:
    """Offline Hugging Face libraries without progress bars or torchvision warnings, torch on `threads` threads.

    Imports torch, diffusers and transformers: call it after parsing arguments, so `--help` stays quick.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local; never ask a hub
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import diffusers
    import torch
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # "requires torchvision ... falling back" on every load
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    torch.set_num_threads(threads)
