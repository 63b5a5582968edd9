from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.server import make_certificates
from tests.system.cluster import build_tiny_models


@pytest.fixture(scope="session")
def system_certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("system-certs"))


@pytest.fixture(scope="session")
def system_tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session with the real CLI (`framecast dev tiny-models`), then copied into each data dir."""
    return build_tiny_models(tmp_path_factory.mktemp("system-tiny") / "tiny")
