"""The `test-null` engine: no model work, but the engine process's real path around it (faults, encode)."""

from __future__ import annotations

import io
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from framecast.bindings import ModelBinding
from framecast.engines.base import GenerationCancelled, GenerationRequest, Progress
from framecast.engines.factory import build_engine
from framecast.engines.names import NULL_ENGINE
from framecast.engines.null import NULL_FRAME_SIZE, NullEngine
from framecast.worker.engine_process import EngineHost

ENDPOINT = "fal-ai/wan-i2v"


def request(num_frames: int = 5) -> GenerationRequest:
    return GenerationRequest(
        image=Image.new("RGB", (96, 64)),
        prompt="a cat",
        width=832,
        height=480,
        num_frames=num_frames,
        frames_per_second=16,
        num_inference_steps=30,
        seed=7,
    )


def test_it_returns_the_requested_frame_count_black_at_16x16() -> None:
    progress: list[Progress] = []
    result = NullEngine().generate(request(num_frames=5), progress.append, lambda *_: None)
    assert result.frames.shape == (5, NULL_FRAME_SIZE, NULL_FRAME_SIZE, 3)
    assert result.frames.dtype == np.uint8 and not result.frames.any()
    assert (result.frames_per_second, result.seed, result.model) == (16, 7, NULL_ENGINE)
    assert [(p.step, p.total_steps) for p in progress] == [(1, 1)]


def test_its_one_step_is_a_cancel_point() -> None:
    def cancelled(_progress: Progress) -> None:
        raise GenerationCancelled()

    with pytest.raises(GenerationCancelled):
        NullEngine().generate(request(), cancelled, lambda *_: None)


def test_the_factory_builds_it_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from framecast.bindings import ModelBinding\n"
        "from framecast.engines.factory import build_engine\n"
        f"engine = build_engine(ModelBinding('{ENDPOINT}', '{NULL_ENGINE}', '/nowhere'))\n"
        "engine.load()\n"
        "print(type(engine).__name__, 'torch' in sys.modules, 'diffusers' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert completed.stdout.split() == ["NullEngine", "False", "False"]
    assert isinstance(build_engine(ModelBinding(ENDPOINT, NULL_ENGINE, "/nowhere")), NullEngine)


def run_host(tmp_path: Path, test_fault: str | None = None) -> list[dict[str, Any]]:
    """One job through the engine process's `EngineHost`, loaded from a test-null binding; every message sent."""
    ours, theirs = multiprocessing.Pipe()
    host = EngineHost(theirs, [ModelBinding(ENDPOINT, NULL_ENGINE, "/nowhere", device="cpu")], max_image_pixels=10**6)
    assert host.load() == {}
    image = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 120, 200)).save(image, format="PNG")
    generation = {
        "prompt": "a cat",
        "width": 832,
        "height": 480,
        "num_frames": 81,
        "frames_per_second": 16,
        "num_inference_steps": 30,
        "seed": 3,
    }
    host.run(
        {
            "endpoint_id": ENDPOINT,
            "generation": generation,
            "images": {"image": image.getvalue()},
            "output_path": str(tmp_path / "out.mp4"),
            "test_fault": test_fault,
        }
    )
    messages = []
    while ours.poll(0):
        messages.append(ours.recv())
    return messages


def test_the_engine_host_encodes_its_frames_to_an_mp4(tmp_path: Path) -> None:
    messages = run_host(tmp_path)
    assert any(m["type"] == "log" and m["message"].startswith(f"Loaded {NULL_ENGINE} ") for m in messages)
    done = messages[-1]
    assert done["type"] == "done"
    assert (done["num_frames"], done["width"], done["height"], done["seed"]) == (81, 16, 16, 3)
    assert done["engine"] == done["model"] == NULL_ENGINE
    with av.open(done["output_path"]) as container:
        frames = list(container.decode(container.streams.video[0]))
    assert len(frames) == 81 and (frames[0].width, frames[0].height) == (16, 16)


def test_test_faults_fire_at_its_step(tmp_path: Path) -> None:
    final = run_host(tmp_path, test_fault="raise_at_step=1")[-1]
    assert final["type"] == "failed" and final["error"] == "Injected test fault at step 1"
    assert not (tmp_path / "out.mp4").exists()
