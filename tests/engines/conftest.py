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


EngineFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def tiny_engine(tiny_models: dict[str, Path]) -> EngineFactory:
    """`tiny_engine("diffusers-framepack", "framepack", render_scale=1.0, **options)`: a loaded engine.

    Engines are cached per argument set for the session, so tests that only read share one load.
    """
    from framecast.bindings import ModelBinding
    from framecast.engines.factory import build_engine

    loaded: dict[str, Any] = {}

    def make(engine: str, recipe: str, render_scale: float = 1.0, **options: Any) -> Any:
        key = repr((engine, recipe, render_scale, sorted(options.items())))
        if key not in loaded:
            binding = ModelBinding(
                endpoint_id="test",
                engine=engine,
                weights=str(tiny_models[recipe]),
                device="cpu",
                dtype="float32",
                render_scale=render_scale,
                options=options,
            )
            built = build_engine(binding)
            with _no_network():
                built.load()
            loaded[key] = built
        return loaded[key]

    return make


def count_calls(module: Any) -> tuple[list[int], Any]:
    """A list that grows by one per forward call of `module`, and the hook handle to remove."""
    calls: list[int] = []
    handle = module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle
