"""FramePack on the tiny pipeline: exact frame counts, sections, previews, partial output on cancel."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from framecast.bindings import ModelBinding
from framecast.engines.base import GenerationCancelled, GenerationRequest, GenerationResult, Progress, Section
from framecast.engines.factory import build_engine
from framecast.engines.framepack import framepack_sections
from tests.engines.conftest import EngineFactory, count_calls

# A 3-latent window makes 12-frame sections, so several sections stay quick on a CPU.
WINDOW = 3


def request(image: Image.Image, **overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "image": image,
        "prompt": "a cat walks in the snow",
        "width": 64,
        "height": 48,
        "num_frames": 30,
        "frames_per_second": 30,
        "num_inference_steps": 2,
        "seed": 7,
        "guidance_scale": 10.0,
        "options": {"true_cfg_scale": 1.0},
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def run(engine: Any, req: GenerationRequest) -> tuple[GenerationResult, list[Progress], list[Section], list[str]]:
    progress: list[Progress] = []
    sections: list[Section] = []
    logs: list[str] = []
    result = engine.generate(req, progress.append, logs.append, sections.append)
    return result, progress, sections, logs


@pytest.fixture
def image(make_image: Callable[..., Image.Image]) -> Image.Image:
    return make_image(96, 64)


@pytest.fixture
def inverted(tiny_engine: EngineFactory) -> Any:
    return tiny_engine("diffusers-framepack", "framepack", latent_window_size=WINDOW)


@pytest.fixture
def forward(tiny_engine: EngineFactory) -> Any:
    return tiny_engine("diffusers-framepack-f1", "framepack", latent_window_size=WINDOW)


@pytest.mark.parametrize(
    ("num_frames", "window", "sections"),
    [(180, 9, 5), (181, 9, 5), (182, 9, 6), (240, 9, 7), (33, 9, 1), (37, 9, 1), (38, 9, 2), (1, 9, 1), (30, 3, 3)],
)
def test_fewest_sections_that_cover_the_frames(num_frames: int, window: int, sections: int) -> None:
    assert framepack_sections(num_frames, window) == sections
    # Each section adds window * 4 frames to the first one.
    assert sections * window * 4 + 1 >= num_frames


@pytest.mark.parametrize("num_frames", [9, 13, 30, 37])
def test_exactly_num_frames_come_back(inverted: Any, image: Image.Image, num_frames: int) -> None:
    result, progress, sections, logs = run(inverted, request(image, num_frames=num_frames))
    expected_sections = framepack_sections(num_frames, WINDOW)
    assert result.frames.shape == (num_frames, 48, 64, 3)
    assert [section.index for section in sections] == list(range(1, expected_sections + 1))
    # The last section holds the whole video the pipeline made, before the trim.
    assert sections[-1].frames.shape[0] == expected_sections * WINDOW * 4 + 1
    assert progress[-1].step == progress[-1].total_steps == expected_sections * 2
    assert any(f"{expected_sections} sections of 12 frames" in line for line in logs)


def test_sections_grow_backwards_for_inverted_sampling(inverted: Any, image: Image.Image) -> None:
    _result, progress, sections, _ = run(inverted, request(image, num_frames=30))
    lengths = [section.frames.shape[0] for section in sections]
    assert lengths == sorted(lengths) and len(set(lengths)) == len(lengths)
    assert {section.placement for section in sections} == {"end"}
    assert all(section.total == 3 for section in sections)
    # Progress counts steps over all sections, in order, with an ETA.
    assert [p.step for p in progress] == list(range(1, 7))
    assert progress[2].eta_s >= 0


def test_f1_samples_forwards(forward: Any, image: Image.Image) -> None:
    result, _, sections, logs = run(forward, request(image, num_frames=30))
    assert result.frames.shape[0] == 30
    assert {section.placement for section in sections} == {"start"}
    assert any("vanilla" in line for line in logs)
    # Sampling forwards, each section keeps the frames before it: the start of the video never changes much.
    first, last = sections[0].frames, sections[-1].frames
    assert first.shape[0] < last.shape[0]


def test_previews_can_be_turned_off(tiny_engine: EngineFactory, image: Image.Image) -> None:
    engine = tiny_engine("diffusers-framepack", "framepack", latent_window_size=WINDOW, previews=False)
    result, _, sections, _ = run(engine, request(image, num_frames=20))
    assert sections == [] and result.frames.shape[0] == 20


def test_same_seed_same_video(inverted: Any, image: Image.Image) -> None:
    first, _, _, _ = run(inverted, request(image, num_frames=13))
    again, _, _, _ = run(inverted, request(image, num_frames=13))
    other, _, _, _ = run(inverted, request(image, num_frames=13, seed=8))
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def test_cancel_keeps_the_finished_sections(inverted: Any, image: Image.Image) -> None:
    finished: list[Section] = []

    def cancel_in_section_three(progress: Progress) -> None:
        if progress.step == 5:  # the first step of the third section
            raise GenerationCancelled("cancelled by the client")

    with pytest.raises(GenerationCancelled) as caught:
        inverted.generate(request(image, num_frames=30), cancel_in_section_three, lambda _: None, finished.append)
    partial = caught.value.partial
    assert partial is not None
    assert (partial.index, partial.total, partial.placement) == (2, 3, "end")
    assert np.array_equal(partial.frames, finished[-1].frames)


def test_cancel_in_the_first_section_has_nothing_to_keep(inverted: Any, image: Image.Image) -> None:
    def cancel(progress: Progress) -> None:
        raise GenerationCancelled()

    with pytest.raises(GenerationCancelled) as caught:
        inverted.generate(request(image, num_frames=30), cancel, lambda _: None)
    assert caught.value.partial is None


def test_last_image_and_its_strength_steer_the_video(
    inverted: Any, image: Image.Image, make_image: Callable[..., Image.Image]
) -> None:
    last = make_image(96, 64, seed=3)

    def frames(**overrides: Any) -> np.ndarray:
        return run(inverted, request(image, num_frames=13, **overrides))[0].frames

    without = frames()
    full = frames(last_image=last)
    full_explicit = frames(last_image=last, options={"true_cfg_scale": 1.0, "last_image_strength": 1.0})
    weaker = frames(last_image=last, options={"true_cfg_scale": 1.0, "last_image_strength": 0.3})
    assert not np.array_equal(without, full)
    assert np.array_equal(full, full_explicit)
    assert not np.array_equal(full, weaker)


def test_true_cfg_runs_the_negative_pass_only_with_a_negative_prompt(inverted: Any, image: Image.Image) -> None:
    calls, handle = count_calls(inverted.pipeline.transformer)
    try:
        cfg = {"true_cfg_scale": 3.0}
        _, _, _, logs = run(inverted, request(image, num_frames=9, options=cfg))
        without_negative = len(calls)
        calls.clear()
        run(inverted, request(image, num_frames=9, options=cfg, negative_prompt="blurry"))
        with_negative = len(calls)
    finally:
        handle.remove()
    assert (without_negative, with_negative) == (2, 4)
    assert any("true CFG is off" in line for line in logs)


def test_components_from_their_own_directories_load_like_the_real_layout(
    tiny_models: dict[str, Path], tmp_path: Path, image: Image.Image
) -> None:
    """The real FramePack is three repos: HunyuanVideo, the FramePack transformer, FLUX Redux's SigLIP.

    The pipeline directory here has neither a transformer nor an image encoder, as after `framecast pull`.
    """
    source = tiny_models["framepack"]
    transformer_dir = tmp_path / "FramePackI2V_HY"
    shutil.copytree(source / "transformer", transformer_dir)
    redux_dir = tmp_path / "flux_redux_bfl"
    for component in ("image_encoder", "feature_extractor"):
        shutil.copytree(source / component, redux_dir / component)
    base_dir = tmp_path / "HunyuanVideo"
    shutil.copytree(source, base_dir, ignore=shutil.ignore_patterns("transformer", "image_encoder"))

    def engine(weights: Path, **options: Any) -> Any:
        binding = ModelBinding(
            "fal-ai/framepack", "diffusers-framepack", str(weights), device="cpu", dtype="float32", options=options
        )
        built = build_engine(binding)
        built.load()
        return built

    split = engine(base_dir, transformer=str(transformer_dir), image_encoder=str(redux_dir), latent_window_size=WINDOW)
    whole = engine(source, latent_window_size=WINDOW)
    assert np.array_equal(
        run(split, request(image, num_frames=13))[0].frames, run(whole, request(image, num_frames=13))[0].frames
    )
