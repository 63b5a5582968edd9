"""Shared fixtures for the engine tests: tiny offline models, built once per session."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub, which reads these once at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


@contextmanager
def _no_network() -> Iterator[None]:
    """Make every outgoing connection fail loudly, to prove a code path is offline."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded here.

    On a 2-core box shared with other test processes, torch's two spinning OpenMP threads made an
    81-frame tiny run 10-20x slower (1.5 s became 15-30 s); one thread keeps it at ~1.5 s either way.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from framecast.engines.tiny_models import build_tiny_models

    with _no_network():
        return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def wan_tiny_dir(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["wan21_i2v"]


@pytest.fixture(scope="session")
def wan_engine(wan_tiny_dir: Path) -> Any:
    """One loaded tiny Wan engine for the session; 832x480 requests render at 112x64."""
    from framecast.engines.wan import WanImageToVideoEngine

    engine = WanImageToVideoEngine(weights=str(wan_tiny_dir), device="cpu", dtype="float32", render_scale=1 / 8)
    with _no_network():
        engine.load()
    return engine


@pytest.fixture
def no_network() -> Callable[[], AbstractContextManager[None]]:
    """`with no_network(): ...` fails any outgoing connection inside the block."""
    return _no_network


def _random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def make_image() -> Callable[..., Image.Image]:
    """`make_image(width, height, seed=0)`: a random RGB image."""
    return _random_image
