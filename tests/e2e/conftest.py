from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from tests.e2e.server import FramecastServer, make_certificates

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session with the real CLI, then copied into each server's data dir."""
    directory = tmp_path_factory.mktemp("tiny") / "models" / "tiny"
    subprocess.run(
        [sys.executable, "-m", "framecast", "dev", "tiny-models", str(directory)],
        check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return directory


def new_data_dir(base: Path, tiny_models: Path) -> Path:
    data_dir = base / "data"
    shutil.copytree(tiny_models, data_dir / "models" / "tiny")
    return data_dir


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[Path, Path, Path], tiny_models: Path
) -> Iterator[FramecastServer]:
    data_dir = new_data_dir(tmp_path_factory.mktemp("server"), tiny_models)
    instance = FramecastServer(
        data_dir=data_dir,
        certificates=certificates,
        extra_arguments=["--sse-keepalive-s", "0.5", "--lease-s", "5", "--cancel-grace-s", "5"],
    )
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def fal(server: FramecastServer) -> ModuleType:
    """The unmodified fal-client, configured only through its environment variables.

    fal_client reads them at import time, so nothing may import it before this fixture.
    """
    assert "fal_client" not in sys.modules, "fal_client was imported before its environment was set"
    assert server.api_key is not None
    os.environ["FAL_KEY"] = server.api_key
    os.environ["FAL_QUEUE_RUN_HOST"] = f"localhost:{server.port}/queue"
    os.environ["FAL_RUN_HOST"] = f"localhost:{server.port}/run"
    os.environ["SSL_CERT_FILE"] = str(server.ca_path)
    import fal_client

    return fal_client


def png_data_uri(width: int = 64, height: int = 40, color: tuple[int, int, int] = (200, 80, 30)) -> str:
    image = Image.new("RGB", (width, height), color)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
