from __future__ import annotations

import pytest

from framecast.worker.engine_process import parse_fault


@pytest.mark.parametrize(
    ("spec", "attempt", "expected"),
    [
        ("raise_at_step=2", 1, ("raise", 2)),
        ("block_at_step=1", 3, ("block", 1)),
        ("block_once_at_step=1", 1, ("block", 1)),
        ("block_once_at_step=1", 2, None),
        ("exit_at_step=4", 1, ("exit", 4)),
        ("ignore_cancel_at_step=1", 1, ("ignore_cancel", 1)),
        ("explode_at_step=1", 1, None),
        ("raise_at_step=x", 1, None),
        ("", 1, None),
        (None, 1, None),
    ],
)
def test_parse_fault(spec: str | None, attempt: int, expected: tuple[str, int] | None) -> None:
    assert parse_fault(spec, attempt=attempt) == expected
