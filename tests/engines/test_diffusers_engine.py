"""What every diffusers engine shares, run on each tiny family: seeds, caching, memory modes, OOM advice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from framecast.bindings import ModelBinding
from framecast.engines.base import EngineError, GenerationRequest
from framecast.engines.factory import build_engine
from framecast.engines.names import ENGINE_OPTIONS
from tests.engines.conftest import EngineFactory, count_calls

# engine, tiny recipe, request overrides: one small job per family.
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "wan-i2v": ("diffusers-wan-i2v", "wan21_i2v", {}),
    "wan-flf2v": ("diffusers-wan-i2v", "wan21_flf2v", {"last_image": True}),
    "wan-2.2-a14b": ("diffusers-wan-i2v", "wan22_i2v_a14b", {}),
    "framepack": ("diffusers-framepack", "framepack", {"num_frames": 13, "options": {"true_cfg_scale": 1.0}}),
    "framepack-f1": ("diffusers-framepack-f1", "framepack", {"num_frames": 13}),
    "svd": ("diffusers-svd", "svd", {"num_frames": 6, "guidance_scale": 3.0, "options": {"motion_bucket_id": 100}}),
    "skyreels-df": ("diffusers-skyreels-df", "skyreels_v2_df", {"num_frames": 9}),
}


def request(make_image: Callable[..., Image.Image], **overrides: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "image": make_image(96, 64),
        "prompt": "a dog runs",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 48,
        "num_frames": 9,
        "frames_per_second": 16,
        "num_inference_steps": 3,
        "seed": 11,
        "guidance_scale": 5.0,
    }
    if overrides.pop("last_image", False):
        fields["last_image"] = make_image(96, 64, seed=5)
    fields.update(overrides)
    return GenerationRequest(**fields)


def quiet(_: Any) -> None:
    pass


def test_every_engine_name_builds() -> None:
    for name in ENGINE_OPTIONS:
        engine = build_engine(ModelBinding("x", name, "/nonexistent", device="cpu", dtype="float32"))
        assert engine.name == name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_video_other_seed_differs(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image], family: str
) -> None:
    engine_name, recipe, overrides = FAMILIES[family]
    engine = tiny_engine(engine_name, recipe)
    first = engine.generate(request(make_image, **overrides), quiet, quiet)
    again = engine.generate(request(make_image, **overrides), quiet, quiet)
    other = engine.generate(request(make_image, **{**overrides, "seed": 12}), quiet, quiet)
    num_frames = overrides.get("num_frames", 9)
    assert first.frames.shape == (num_frames, 48, 64, 3)
    assert np.array_equal(first.frames, again.frames)
    assert not np.array_equal(first.frames, other.frames)


def last_block(engine: Any) -> Any:
    """A Linear deep inside the transformer's last block: it runs only when the block really computes.

    (The block's own pre-hooks fire even when the cache returns its stored output instead.)
    """
    transformer = engine.pipeline.transformer
    for blocks in ("single_transformer_blocks", "transformer_blocks", "blocks"):
        if len(getattr(transformer, blocks, [])):
            block = getattr(transformer, blocks)[-1]
            return [module for module in block.modules() if isinstance(module, torch.nn.Linear)][-1]
    raise AssertionError("no transformer blocks")


@pytest.mark.parametrize(
    ("family", "cache_on", "cache_off"),
    [
        # Wan: the request's `acceleration` decides.
        ("wan-i2v", {"options": {"acceleration": "regular"}}, {"options": {"acceleration": "none"}}),
        ("wan-flf2v", {"options": {"acceleration": "regular"}}, {"options": {"acceleration": "none"}}),
        ("wan-2.2-a14b", {"options": {"acceleration": "regular"}}, {"options": {"acceleration": "none"}}),
        # No acceleration field: the binding's `cache` option decides (see the engine fixture below).
        ("framepack", {}, None),
        ("framepack-f1", {}, None),
        ("skyreels-df", {}, None),
    ],
)
def test_step_cache_skips_transformer_blocks(
    tiny_engine: EngineFactory,
    make_image: Callable[..., Image.Image],
    family: str,
    cache_on: dict[str, Any],
    cache_off: dict[str, Any] | None,
) -> None:
    engine_name, recipe, overrides = FAMILIES[family]
    steps = {"num_inference_steps": 12}
    if cache_off is None:
        # Random weights barely change between steps, so a generous threshold shows the mechanism.
        cached_engine = tiny_engine(engine_name, recipe, cache="first_block", cache_threshold=0.5)
        plain_engine = tiny_engine(engine_name, recipe)
        cache_off = {}
    else:
        cached_engine = plain_engine = tiny_engine(engine_name, recipe, cache_threshold=0.5)

    def tail_calls(engine: Any, extra: dict[str, Any]) -> tuple[int, int, list[str], np.ndarray]:
        block_calls, block_hook = count_calls(last_block(engine))
        transformer_calls, transformer_hook = count_calls(engine.pipeline.transformer)
        logs: list[str] = []
        try:
            merged = {**overrides, **steps, **extra}
            merged["options"] = {**overrides.get("options", {}), **extra.get("options", {})}
            result = engine.generate(request(make_image, **merged), quiet, logs.append)
        finally:
            block_hook.remove()
            transformer_hook.remove()
        return len(block_calls), len(transformer_calls), logs, result.frames

    cached_tail, cached_forwards, cached_logs, cached_frames = tail_calls(cached_engine, cache_on)
    plain_tail, plain_forwards, plain_logs, _ = tail_calls(plain_engine, cache_off)
    # The transformer is still called every step; FirstBlockCache skips the blocks after the first.
    assert cached_forwards == plain_forwards > 0
    assert plain_tail == plain_forwards
    assert cached_tail < plain_tail
    assert any("FirstBlockCache" in line for line in cached_logs)
    assert not any("FirstBlockCache" in line for line in plain_logs)
    assert cached_frames.shape[0] == overrides.get("num_frames", 9)


def test_cache_is_off_again_after_a_cached_job(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image]
) -> None:
    engine = tiny_engine("diffusers-wan-i2v", "wan21_i2v", cache_threshold=0.5)
    steps = {"num_inference_steps": 8}
    engine.generate(request(make_image, options={"acceleration": "regular"}, **steps), quiet, quiet)
    calls, hook = count_calls(last_block(engine))
    try:
        engine.generate(request(make_image, options={"acceleration": "none"}, **steps), quiet, quiet)
    finally:
        hook.remove()
    assert len(calls) == 16  # 8 steps, cond and uncond, nothing skipped


@pytest.mark.parametrize(
    "options",
    [
        {"memory": "group_offload"},
        {"layerwise_casting": "float8_e4m3fn"},
        {"vae_tiling": True},
    ],
)
def test_memory_modes_that_work_on_cpu_give_a_video(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image], options: dict[str, Any]
) -> None:
    engine = tiny_engine("diffusers-wan-i2v", "wan21_i2v", **options)
    result = engine.generate(request(make_image), quiet, quiet)
    assert result.frames.shape == (9, 48, 64, 3) and result.frames.std() > 0


def test_group_offload_gives_the_same_video(tiny_engine: EngineFactory, make_image: Callable[..., Image.Image]) -> None:
    plain = tiny_engine("diffusers-wan-i2v", "wan21_i2v").generate(request(make_image), quiet, quiet)
    offloaded = tiny_engine("diffusers-wan-i2v", "wan21_i2v", memory="group_offload")
    assert np.array_equal(offloaded.generate(request(make_image), quiet, quiet).frames, plain.frames)


@pytest.mark.parametrize("memory", ["model_cpu_offload", "sequential_cpu_offload"])
def test_offload_to_cpu_needs_a_gpu_and_says_so(tiny_models: dict[str, Any], memory: str) -> None:
    binding = ModelBinding(
        "x",
        "diffusers-wan-i2v",
        str(tiny_models["wan21_i2v"]),
        device="cpu",
        dtype="float32",
        options={"memory": memory},
    )
    with pytest.raises(EngineError, match=f"memory = '{memory}' moves weights between CPU and a GPU"):
        build_engine(binding).load()


def test_invalid_options_are_refused_before_loading() -> None:
    with pytest.raises(EngineError, match="memory"):
        build_engine(ModelBinding("x", "diffusers-wan-i2v", "/m", device="cpu", options={"memory": "lots"}))
    with pytest.raises(EngineError, match="UNet"):
        build_engine(ModelBinding("x", "diffusers-svd", "/m", device="cpu", options={"cache": "first_block"}))


@pytest.mark.parametrize(
    ("options", "advice"),
    [
        ({}, 'try memory = "model_cpu_offload", or vae_tiling = true, or layerwise_casting = "float8_e4m3fn"'),
        (
            {"memory": "model_cpu_offload", "vae_tiling": True},
            'try memory = "group_offload", or layerwise_casting = "float8_e4m3fn"',
        ),
        (
            {"memory": "group_offload", "vae_tiling": True, "layerwise_casting": "float8_e4m3fn"},
            'try memory = "sequential_cpu_offload"',
        ),
    ],
)
def test_out_of_memory_names_the_next_memory_mode(
    tiny_models: dict[str, Any],
    make_image: Callable[..., Image.Image],
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    advice: str,
) -> None:
    binding = ModelBinding("x", "diffusers-wan-i2v", str(tiny_models["wan21_i2v"]), device="cpu", dtype="float32")
    engine = build_engine(binding)
    engine.load()
    # The settings are what the advice reads; the offload modes themselves need a GPU to load.
    engine.settings = engine.settings.model_copy(update=options)  # type: ignore[attr-defined]

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine.pipeline.transformer, "forward", oom)  # type: ignore[attr-defined]
    with pytest.raises(EngineError) as caught:
        engine.generate(request(make_image), quiet, quiet)
    assert advice in str(caught.value)


# Models that cannot take a last image (for this request): engine, tiny recipe, binding options, request overrides.
NO_LAST_IMAGE: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "wan-2.1-i2v": ("diffusers-wan-i2v", "wan21_i2v", {}, {}),
    "svd": ("diffusers-svd", "svd", {}, {"num_frames": 6, "guidance_scale": 3.0}),
    "framepack-f1": ("diffusers-framepack-f1", "framepack", {}, {"num_frames": 13}),
    # Two chunks: diffusers' long-video loop cannot take a last image.
    "skyreels-df-two-chunks": (
        "diffusers-skyreels-df",
        "skyreels_v2_df",
        # No noise on the overlap: that noise is drawn without the job's generator, and the comparison needs seeds.
        {"base_num_frames": 9, "overlap_history": 5, "addnoise_condition": 0},
        {"num_frames": 13},
    ),
}


@pytest.mark.parametrize("family", sorted(NO_LAST_IMAGE))
def test_a_last_image_the_model_cannot_take(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image], family: str
) -> None:
    engine_name, recipe, options, overrides = NO_LAST_IMAGE[family]
    engine = tiny_engine(engine_name, recipe, **options)
    # An open first-last-frame endpoint exists for its last image: 422, nothing rendered.
    with pytest.raises(EngineError, match="cannot take a last_image") as caught:
        engine.generate(request(make_image, last_image=True, **overrides), quiet, quiet)
    assert caught.value.status_code == 422

    # A mapped closed endpoint names the field: dropped with a WARN naming it, the rest rendered as asked.
    logs: list[tuple[str, str]] = []
    mapped = {**overrides, "options": {**overrides.get("options", {}), "last_image_field": "tail_image_url"}}
    dropped = engine.generate(
        request(make_image, last_image=True, **mapped), quiet, lambda line, level="INFO": logs.append((level, line))
    )
    warnings = [line for level, line in logs if level == "WARN"]
    assert len(warnings) == 1 and warnings[0].startswith("tail_image_url ignored: ")
    without = engine.generate(request(make_image, **mapped), quiet, quiet)
    assert np.array_equal(dropped.frames, without.frames)


@pytest.mark.parametrize(
    ("engine_name", "recipe"),
    [
        ("diffusers-wan-i2v", "wan22_i2v_a14b"),
        ("diffusers-framepack", "framepack"),
        ("diffusers-skyreels-df", "skyreels_v2_df"),
    ],
)
def test_an_optional_last_image_is_kept_where_the_model_takes_one(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image], engine_name: str, recipe: str
) -> None:
    # The engines a closed endpoint with an optional end frame may be mapped onto: with and without one.
    engine = tiny_engine(engine_name, recipe)
    logs: list[tuple[str, str]] = []
    mapped = {"num_frames": 13, "options": {"last_image_field": "end_image_url", "true_cfg_scale": 1.0}}
    kept = engine.generate(
        request(make_image, last_image=True, **mapped), quiet, lambda line, level="INFO": logs.append((level, line))
    )
    assert not [line for level, line in logs if level == "WARN"]
    without = engine.generate(request(make_image, **mapped), quiet, quiet)
    assert kept.frames.shape == without.frames.shape == (13, 48, 64, 3)
    assert not np.array_equal(kept.frames, without.frames)


def test_wan_first_last_frame_model_needs_its_last_image(
    tiny_engine: EngineFactory, make_image: Callable[..., Image.Image]
) -> None:
    engine = tiny_engine("diffusers-wan-i2v", "wan21_flf2v")
    with pytest.raises(EngineError, match="needs a last image") as caught:
        engine.generate(request(make_image), quiet, quiet)
    assert caught.value.status_code == 422
