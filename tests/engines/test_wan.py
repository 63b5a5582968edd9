from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from framecast.engines.base import (
    EngineError,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    Progress,
)
from framecast.engines.wan import WanImageToVideoEngine, scaled_size, valid_num_frames

ImageFactory = Callable[..., Image.Image]


def request(image: Image.Image, **overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "image": image,
        "prompt": "a monkey dancing in the snow",
        "negative_prompt": "blurry",
        "width": 832,
        "height": 480,
        "num_frames": 81,
        "frames_per_second": 16,
        "num_inference_steps": 2,
        "seed": 42,
        "guidance_scale": 5.0,
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def run(engine: WanImageToVideoEngine, req: GenerationRequest) -> tuple[GenerationResult, list[Progress], list[str]]:
    progress: list[Progress] = []
    logs: list[str] = []
    result = engine.generate(req, progress.append, logs.append)
    return result, progress, logs


@pytest.fixture(scope="module")
def baseline(wan_engine: WanImageToVideoEngine) -> tuple[GenerationResult, list[Progress], list[str]]:
    """One default 81-frame run at seed 42 that several tests compare against."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (480, 832, 3), dtype=np.uint8))
    return run(wan_engine, request(image))


@pytest.fixture
def source_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (480, 832, 3), dtype=np.uint8))


def test_scaled_size() -> None:
    assert scaled_size(832, 480, 1 / 8) == (112, 64)
    assert scaled_size(1280, 720, 1 / 8) == (160, 96)
    assert scaled_size(832, 480, 1.0) == (832, 480)
    assert scaled_size(832, 480, 0.001) == (16, 16)


def test_valid_num_frames_rounds_up_to_4k_plus_1() -> None:
    # Rendered frames are then trimmed, so the requested count is honoured exactly.
    assert [valid_num_frames(n) for n in (81, 80, 82, 83, 84, 85, 1, 0)] == [81, 81, 85, 85, 85, 85, 1, 1]


def test_generates_81_frames_at_the_render_scale(
    baseline: tuple[GenerationResult, list[Progress], list[str]], wan_tiny_dir: Path
) -> None:
    result, _, logs = baseline
    assert result.frames.shape == (81, 64, 112, 3)
    assert result.frames.dtype == np.uint8
    assert result.frames.std() > 0  # not a constant image
    assert (result.frames_per_second, result.seed, result.model) == (16, 42, str(wan_tiny_dir))
    assert any("render scale 0.125" in line and "112x64" in line and "832x480" in line for line in logs)


def test_progress_reports_every_step_in_order(baseline: tuple[GenerationResult, list[Progress], list[str]]) -> None:
    _, progress, _ = baseline
    assert [(p.step, p.total_steps) for p in progress] == [(1, 2), (2, 2)]
    assert 0 <= progress[0].elapsed_s <= progress[1].elapsed_s


def test_same_seed_is_deterministic_and_other_seed_differs(
    wan_engine: WanImageToVideoEngine,
    baseline: tuple[GenerationResult, list[Progress], list[str]],
    source_image: Image.Image,
) -> None:
    again, _, _ = run(wan_engine, request(source_image))
    other, _, _ = run(wan_engine, request(source_image, seed=43))
    assert np.array_equal(again.frames, baseline[0].frames)
    assert not np.array_equal(other.frames, baseline[0].frames)
    assert other.seed == 43


def test_cancel_at_step_one_stops_the_run(wan_engine: WanImageToVideoEngine, source_image: Image.Image) -> None:
    forwards: list[int] = []
    handle = wan_engine.pipeline.transformer.register_forward_pre_hook(lambda *_: forwards.append(1))
    seen: list[int] = []

    def cancel(progress: Progress) -> None:
        seen.append(progress.step)
        raise GenerationCancelled("job cancelled")

    try:
        with pytest.raises(GenerationCancelled, match="job cancelled"):
            wan_engine.generate(request(source_image, num_inference_steps=4), cancel, lambda _: None)
    finally:
        handle.remove()
    assert seen == [1]
    assert len(forwards) == 2  # one step with CFG (cond + uncond), not 4 steps


def test_shift_is_applied_and_does_not_leak(wan_engine: WanImageToVideoEngine, source_image: Image.Image) -> None:
    def sigmas_during(req: GenerationRequest) -> tuple[np.ndarray, list[float]]:
        seen: list[list[float]] = []

        def record(progress: Progress) -> None:
            if progress.step == 1:
                seen.append(wan_engine.pipeline.scheduler.sigmas.tolist())

        result = wan_engine.generate(req, record, lambda _: None)
        return result.frames, seen[0]

    small = {"num_frames": 17}
    default_frames, default_sigmas = sigmas_during(request(source_image, **small))
    shifted_frames, shifted_sigmas = sigmas_during(request(source_image, shift=1.0, **small))
    after_frames, after_sigmas = sigmas_during(request(source_image, **small))

    assert shifted_sigmas != default_sigmas
    assert not np.array_equal(shifted_frames, default_frames)
    # The next job is back on the loaded schedule, bit for bit.
    assert after_sigmas == default_sigmas
    assert np.array_equal(after_frames, default_frames)
    assert wan_engine.pipeline.scheduler.config.shift == 5.0


def test_flow_shift_of_a_unipc_scheduler(wan_tiny_dir: Path, tmp_path: Path, source_image: Image.Image) -> None:
    from diffusers import UniPCMultistepScheduler

    # The published Wan 2.1 repos ship UniPC with `flow_shift`, not FlowMatchEuler's `shift`.
    weights = tmp_path / "wan-unipc"
    shutil.copytree(wan_tiny_dir, weights)
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0).save_pretrained(
        weights / "scheduler"
    )
    index = json.loads((weights / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "UniPCMultistepScheduler"]
    (weights / "model_index.json").write_text(json.dumps(index))

    engine = WanImageToVideoEngine(weights=str(weights), device="cpu", dtype="float32", render_scale=1 / 8)
    engine.load()
    shifts: list[float] = []

    def record(progress: Progress) -> None:
        shifts.append(engine.pipeline.scheduler.config.flow_shift)

    engine.generate(request(source_image, num_frames=5, shift=7.0), record, lambda _: None)
    assert shifts == [7.0, 7.0]
    assert isinstance(engine.pipeline.scheduler, UniPCMultistepScheduler)
    assert engine.pipeline.scheduler.config.flow_shift == 3.0


def test_num_frames_not_4k_plus_1_is_honoured_exactly(
    wan_engine: WanImageToVideoEngine, source_image: Image.Image
) -> None:
    result, _, logs = run(wan_engine, request(source_image, num_frames=19))
    assert result.frames.shape[0] == 19
    assert any("num_frames 19" in line and "rendering 21 frames" in line for line in logs)


def test_portrait_request_with_another_input_aspect(
    wan_engine: WanImageToVideoEngine, make_image: ImageFactory
) -> None:
    result, _, _ = run(wan_engine, request(make_image(300, 500, seed=1), width=480, height=832, num_frames=9))
    assert result.frames.shape == (9, 112, 64, 3)


def test_last_image_needs_a_first_last_frame_model(wan_engine: WanImageToVideoEngine, make_image: ImageFactory) -> None:
    # Wan 2.1 I2V concatenates the two CLIP embeddings into a batch of two and fails deep inside the transformer;
    # only FLF2V (pos_embed_seq_len set) supports a last frame. The engine says so up front.
    req = request(make_image(64, 64), last_image=make_image(64, 64, seed=2), num_frames=5)
    with pytest.raises(EngineError, match="last_image"):
        wan_engine.generate(req, lambda _: None, lambda _: None)


def test_out_of_memory_becomes_engine_error(
    wan_engine: WanImageToVideoEngine, source_image: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    loaded_scheduler = wan_engine.pipeline.scheduler
    monkeypatch.setattr(wan_engine.pipeline.transformer, "forward", oom)
    with pytest.raises(EngineError, match="out of GPU memory") as caught:
        wan_engine.generate(request(source_image, num_frames=5, shift=2.0), lambda _: None, lambda _: None)
    assert caught.value.error_type == "internal_server_error"
    # The error names the next memory mode to try, from the binding's current settings.
    assert 'try memory = "model_cpu_offload", or vae_tiling = true' in str(caught.value)
    assert wan_engine.pipeline.scheduler is loaded_scheduler


def test_missing_local_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    engine = WanImageToVideoEngine(weights=str(missing), device="cpu")
    with pytest.raises(EngineError, match="does not exist") as caught:
        engine.load()
    assert str(missing) in str(caught.value)


def test_directory_without_model_index(tmp_path: Path) -> None:
    engine = WanImageToVideoEngine(weights=str(tmp_path), device="cpu")
    with pytest.raises(EngineError, match=r"model_index\.json"):
        engine.load()


def test_uncached_repo_id_names_framecast_pull() -> None:
    engine = WanImageToVideoEngine(weights="framecast-test/not-in-the-cache", device="cpu")
    with pytest.raises(EngineError, match=r"framecast pull framecast-test/not-in-the-cache"):
        engine.load()
    assert not engine.loaded


def test_generate_before_load_is_an_engine_error(source_image: Image.Image) -> None:
    engine = WanImageToVideoEngine(weights="owner/name", device="cpu")
    with pytest.raises(EngineError, match="load"):
        engine.generate(request(source_image), lambda _: None, lambda _: None)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_an_engine_error(wan_tiny_dir: Path) -> None:
    with pytest.raises(EngineError, match="no CUDA GPU"):
        WanImageToVideoEngine(weights=str(wan_tiny_dir), device="cuda").load()


@pytest.mark.parametrize(
    "kwargs",
    [{"dtype": "float8"}, {"render_scale": 0.0}, {"render_scale": float("nan")}, {"device": "no-such-device"}],
)
def test_bad_settings_are_engine_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(EngineError):
        WanImageToVideoEngine(weights="owner/name", **kwargs)
