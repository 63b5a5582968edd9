from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import NetworkGuard


@pytest.fixture(autouse=True)
def guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fails any test that tries to reach beyond loopback or to resolve a real name."""
    net = NetworkGuard(monkeypatch)
    yield net
    assert net.violations == [], "a test tried to reach the network beyond loopback"
