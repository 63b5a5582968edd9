"""Parameter mapping: each endpoint's documented fields in engine terms."""

from __future__ import annotations

from typing import Any

import pytest

from framecast.endpoints import ImageDimensions, build_catalogue
from framecast.endpoints.closed import LAST_IMAGE_FIELDS
from framecast.endpoints.spec import GenerationPlan
from framecast.engines.base import GenerationRequest
from framecast.engines.names import ENGINE_OPTIONS, ENGINE_TRAITS, engine_traits

CATALOGUE = build_catalogue()
LANDSCAPE = ImageDimensions(1600, 900)
PORTRAIT = ImageDimensions(600, 1000)
GENERATION_FIELDS = set(GenerationRequest.__dataclass_fields__) - {"image", "last_image"}


def plan(
    endpoint_id: str, image: ImageDimensions = LANDSCAPE, *, engine: str | None = None, **fields: Any
) -> GenerationPlan:
    """The endpoint's plan for its documented example with `fields`, bound to `engine` (None: not known)."""
    spec = CATALOGUE[endpoint_id]
    request = spec.input_model.model_validate({**spec.example, **fields})
    images = {name: image for name in spec.image_fields if getattr(request, name, None) is not None}
    return spec.plan(request, images, engine_traits(engine))


@pytest.mark.parametrize("endpoint_id", sorted(CATALOGUE))
def test_every_plan_speaks_the_engine_request(endpoint_id: str) -> None:
    generation = plan(endpoint_id).generation
    assert set(generation) <= GENERATION_FIELDS
    assert {"prompt", "width", "height", "num_frames", "frames_per_second", "num_inference_steps", "seed"} <= set(
        generation
    )
    assert generation["width"] % 16 == 0 and generation["height"] % 16 == 0
    assert isinstance(generation["seed"], int) and generation["seed"] >= 0


SEEDED = sorted(endpoint_id for endpoint_id, spec in CATALOGUE.items() if "seed" in spec.input_model.model_fields)


@pytest.mark.parametrize("endpoint_id", SEEDED)
def test_a_given_seed_is_kept(endpoint_id: str) -> None:
    assert plan(endpoint_id, seed=1234).generation["seed"] == 1234


@pytest.mark.parametrize("endpoint_id", ["wavespeed-ai/framepack", "fal-ai/bytedance/seedance/v1/lite/image-to-video"])
def test_minus_one_means_random(endpoint_id: str) -> None:
    seeds = {plan(endpoint_id, seed=-1).generation["seed"] for _ in range(5)}
    assert all(seed >= 0 for seed in seeds) and len(seeds) > 1


def test_auto_aspect_follows_the_image_and_fixed_aspects_do_not() -> None:
    auto = plan("fal-ai/wan-i2v", PORTRAIT).generation
    assert (auto["width"], auto["height"]) == (736, 1232)
    fixed = plan("fal-ai/wan-i2v", PORTRAIT, aspect_ratio="16:9").generation
    assert (fixed["width"], fixed["height"]) == (1280, 720)
    veo = plan("fal-ai/veo2/image-to-video", ImageDimensions(1000, 1000), aspect_ratio="auto_prefer_portrait")
    assert veo.generation["height"] > veo.generation["width"]


@pytest.mark.parametrize(
    ("endpoint_id", "fields", "frames", "fps"),
    [
        # A closed endpoint whose engine is not known plans at the closed models' own 24 fps.
        ("fal-ai/veo2/image-to-video", {"duration": "8s"}, 192, 24),
        ("fal-ai/framepack", {"num_frames": 90}, 90, 30),
        ("fal-ai/wan-i2v", {"num_frames": 97, "frames_per_second": 24}, 97, 24),
        ("fal-ai/wan-pro/image-to-video", {}, 180, 30),
        ("fal-ai/magi-distilled/image-to-video", {"num_frames": 120}, 120, 24),
        ("fal-ai/stable-video", {"fps": 10}, 25, 10),
    ],
)
def test_duration_and_frame_counts(endpoint_id: str, fields: dict[str, Any], frames: int, fps: int) -> None:
    generation = plan(endpoint_id, **fields).generation
    assert (generation["num_frames"], generation["frames_per_second"]) == (frames, fps)


def test_guidance_fields_are_mapped_by_name() -> None:
    wan = plan("fal-ai/wan-i2v", guide_scale=7.5, shift=3).generation
    assert (wan["guidance_scale"], wan["shift"]) == (7.5, 3)
    framepack = plan("fal-ai/framepack", guidance_scale=12, cfg_scale=2).generation
    assert (framepack["guidance_scale"], framepack["options"]["true_cfg_scale"]) == (12, 2)
    assert plan("fal-ai/framepack/flf2v", strength=0.3).generation["options"]["last_image_strength"] == 0.3
    svd = plan("fal-ai/stable-video", motion_bucket_id=200, cond_aug=0.1).generation["options"]
    assert (svd["motion_bucket_id"], svd["noise_aug_strength"]) == (200, 0.1)
    assert (
        plan("fal-ai/magi-distilled/image-to-video", num_inference_steps="32").generation["num_inference_steps"] == 32
    )


def test_resolutions_become_sizes() -> None:
    assert (plan("fal-ai/framepack", resolution="480p", aspect_ratio="9:16").generation["width"]) == 480
    pixverse = plan("fal-ai/pixverse/v4.5/image-to-video", resolution="540p", aspect_ratio="1:1").generation
    assert (pixverse["width"], pixverse["height"]) == (720, 720)
    svd = plan("fal-ai/stable-video", PORTRAIT).generation
    assert (svd["width"], svd["height"]) == (576, 1024)


@pytest.mark.parametrize(
    ("endpoint_id", "fields", "option"),
    [
        ("fal-ai/wan-i2v", {"enable_prompt_expansion": True}, "enable_prompt_expansion"),
        ("fal-ai/wan-i2v", {"typo_field": 1}, "typo_field"),
        ("fal-ai/minimax/hailuo-02/pro/image-to-video", {"prompt_optimizer": True}, "prompt_optimizer"),
        ("fal-ai/bytedance/seedance/v1/lite/image-to-video", {"camera_fixed": True}, "camera_fixed"),
        ("fal-ai/pixverse/v4.5/image-to-video", {"style": "anime", "camera_movement": "zoom_in"}, "camera_movement"),
        ("fal-ai/pixverse/v4.5/image-to-video", {"style": "anime"}, "style"),
        ("fal-ai/luma-dream-machine/ray-2-flash/image-to-video", {"loop": True}, "loop"),
        ("fal-ai/kling-video/v1/standard/image-to-video", {"static_mask_url": "x"}, "static_mask_url"),
    ],
)
def test_options_that_cannot_be_honoured_are_noted(endpoint_id: str, fields: dict[str, Any], option: str) -> None:
    assert any(option in note for note in plan(endpoint_id, **fields).notes)


@pytest.mark.parametrize("enabled", [True, False])
def test_the_safety_checker_flag_travels_to_the_worker(enabled: bool) -> None:
    spec = CATALOGUE["fal-ai/framepack"]
    request = spec.input_model.model_validate({**spec.example, "enable_safety_checker": enabled})
    generation = spec.plan_generation(request, {"image_url": LANDSCAPE}).generation
    assert generation["options"]["enable_safety_checker"] is enabled
    assert generation["options"]["true_cfg_scale"] == 1  # the endpoint's own options are kept


def test_wan_acceleration_is_the_engine_cache_level() -> None:
    assert plan("fal-ai/wan-i2v", acceleration="none").generation["options"] == {"acceleration": "none"}
    assert plan("fal-ai/wan-i2v").notes == []


def test_output_seed_follows_the_documentation() -> None:
    assert CATALOGUE["fal-ai/wan-i2v"].output_has_seed
    assert not CATALOGUE["fal-ai/veo2/image-to-video"].output_has_seed


# -- closed endpoints mapped onto a local engine (docs/closed-models.md) ------------------------------------

CLOSED = sorted(endpoint_id for endpoint_id, spec in CATALOGUE.items() if spec.kind == "closed")
KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
SEEDANCE = "fal-ai/bytedance/seedance/v1/lite/image-to-video"
HAILUO = "fal-ai/minimax/hailuo-02/pro/image-to-video"
LUMA = "fal-ai/luma-dream-machine/ray-2-flash/image-to-video"
PIXVERSE = "fal-ai/pixverse/v4.5/image-to-video"
TRANSITION = "fal-ai/pixverse/v4.5/transition"


def test_every_engine_that_renders_has_its_traits() -> None:
    # A new engine cannot serve a mapped closed endpoint at a made-up frame rate.
    assert set(ENGINE_TRAITS) == set(ENGINE_OPTIONS)
    assert {engine: traits.frames_per_second for engine, traits in ENGINE_TRAITS.items()} == {
        "diffusers-wan-i2v": 16,
        "diffusers-framepack": 30,
        "diffusers-framepack-f1": 30,
        "diffusers-svd": 7,
        "diffusers-skyreels-df": 24,
    }


@pytest.mark.parametrize(
    ("endpoint_id", "fields", "engine", "frames", "fps"),
    [
        (KLING, {"duration": "5"}, "diffusers-wan-i2v", 80, 16),
        (KLING, {"duration": 10}, "diffusers-wan-i2v", 160, 16),
        (KLING, {"duration": "5"}, "diffusers-framepack", 150, 30),
        (KLING, {"duration": "5"}, "diffusers-framepack-f1", 150, 30),
        (KLING, {"duration": "5"}, "diffusers-svd", 35, 7),
        (KLING, {"duration": "5"}, "diffusers-skyreels-df", 120, 24),
        ("fal-ai/veo2/image-to-video", {"duration": "5s"}, "diffusers-wan-i2v", 80, 16),
        ("fal-ai/veo2/image-to-video", {"duration": "8s"}, "diffusers-skyreels-df", 192, 24),
        (SEEDANCE, {"duration": "2"}, "diffusers-wan-i2v", 32, 16),
        (SEEDANCE, {"duration": "3", "num_frames": 50}, "diffusers-wan-i2v", 50, 16),  # frames are kept exactly
        (HAILUO, {}, "diffusers-wan-i2v", 96, 16),  # Hailuo-02 always makes 6 s
        (HAILUO, {}, "diffusers-framepack", 180, 30),
        (PIXVERSE, {"duration": "8"}, "diffusers-framepack-f1", 240, 30),
        (TRANSITION, {"duration": 5}, "diffusers-framepack", 150, 30),
        (LUMA, {"duration": "9s"}, "diffusers-svd", 63, 7),
    ],
)
def test_a_duration_is_frames_at_the_mapped_engines_rate(
    endpoint_id: str, fields: dict[str, Any], engine: str, frames: int, fps: int
) -> None:
    generation = plan(endpoint_id, engine=engine, **fields).generation
    assert (generation["num_frames"], generation["frames_per_second"]) == (frames, fps)
    assert generation["num_inference_steps"] == ENGINE_TRAITS[engine].num_inference_steps


def test_the_api_plans_with_the_bound_engine() -> None:
    spec = CATALOGUE[KLING]
    request = spec.input_model.model_validate(spec.example)
    mapped = spec.plan_generation(request, {"image_url": LANDSCAPE}, "diffusers-framepack").generation
    assert (mapped["num_frames"], mapped["frames_per_second"]) == (150, 30)
    unknown = spec.plan_generation(request, {"image_url": LANDSCAPE}).generation
    assert (unknown["num_frames"], unknown["frames_per_second"]) == (120, 24)


@pytest.mark.parametrize("engine", sorted(ENGINE_TRAITS))
def test_kling_cfg_scale_is_relative_to_the_engines_own_guidance(engine: str) -> None:
    default = ENGINE_TRAITS[engine].guidance_scale

    def guidance(cfg_scale: float) -> float:
        return float(plan(KLING, engine=engine, cfg_scale=cfg_scale).generation["guidance_scale"])

    # Kling's default 0.5 is the engine's default; 0 turns guidance off (1); 1 is twice as far from 1.
    assert guidance(0.5) == pytest.approx(default)
    assert guidance(0.0) == pytest.approx(1.0)
    assert guidance(1.0) == pytest.approx(2 * default - 1)
    # Endpoints without a guidance field get the engine's default.
    assert plan(PIXVERSE, engine=engine).generation["guidance_scale"] == pytest.approx(default)


def test_sizes_follow_resolution_and_aspect_ratio_whatever_the_engine() -> None:
    for engine in ENGINE_TRAITS:
        pixverse = plan(PIXVERSE, engine=engine, resolution="540p", aspect_ratio="1:1").generation
        assert (pixverse["width"], pixverse["height"]) == (720, 720)
    kling_portrait = plan(KLING, PORTRAIT, engine="diffusers-wan-i2v").generation  # no aspect field: the image's
    assert kling_portrait["height"] > kling_portrait["width"]
    fixed = plan("fal-ai/kling-video/v1.6/pro/image-to-video", PORTRAIT, aspect_ratio="16:9").generation
    assert (fixed["width"], fixed["height"]) == (1280, 720)
    hailuo = plan(HAILUO, ImageDimensions(1000, 1000), engine="diffusers-wan-i2v").generation
    assert (hailuo["width"], hailuo["height"]) == (1440, 1440)  # 1080p's pixel count at the image's 1:1
    seedance = plan(SEEDANCE, engine="diffusers-wan-i2v", resolution="480p", aspect_ratio="9:16").generation
    assert (seedance["width"], seedance["height"]) == (480, 832)


def test_negative_prompt_and_prompt_go_where_the_engine_takes_them() -> None:
    negative = "rain, blur"
    wan = plan(KLING, engine="diffusers-wan-i2v", negative_prompt=negative)
    assert wan.generation["negative_prompt"] == negative and wan.notes == []
    framepack = plan(KLING, engine="diffusers-framepack", negative_prompt=negative)
    assert framepack.generation["negative_prompt"] == ""
    assert framepack.notes == ["negative_prompt='rain, blur': FramePack, as mapped, takes no negative prompt; ignored"]
    svd = plan(KLING, engine="diffusers-svd", prompt="a cat " * 20, negative_prompt=negative)
    assert (svd.generation["prompt"], svd.generation["negative_prompt"]) == ("", "")
    assert [note.split("=")[0] for note in svd.notes] == ["prompt", "negative_prompt"]
    assert "Stable Video Diffusion takes no text prompt" in svd.notes[0]
    assert "a cat " * 20 not in svd.notes[0] and "…" in svd.notes[0], "a long prompt is shortened in the log"
    # An empty negative prompt (PixVerse's default) is nothing to drop.
    assert plan(PIXVERSE, engine="diffusers-framepack-f1", negative_prompt="").notes == []


@pytest.mark.parametrize(
    ("endpoint_id", "image_field"),
    [
        ("fal-ai/kling-video/v1.6/pro/image-to-video", "tail_image_url"),
        ("fal-ai/kling-video/v1.5/pro/image-to-video", "tail_image_url"),
        ("fal-ai/kling-video/v1/standard/image-to-video", "tail_image_url"),
        (SEEDANCE, "end_image_url"),
        (HAILUO, "end_image_url"),
        (TRANSITION, "last_image_url"),
        (TRANSITION, "end_image_url"),
        (LUMA, "end_image_url"),
    ],
)
def test_end_and_tail_images_are_the_engines_last_image(endpoint_id: str, image_field: str) -> None:
    spec = CATALOGUE[endpoint_id]
    assert spec.image_fields[image_field] == "last_image"
    fields = {"last_image_url": None} if endpoint_id == TRANSITION else {}
    with_last = plan(endpoint_id, engine="diffusers-wan-i2v", **{**fields, image_field: "https://x/end.png"})
    # The engine names the field when its model cannot take a last image, and drops it instead of failing.
    assert with_last.generation["options"] == {"last_image_field": image_field}
    without = plan(endpoint_id, engine="diffusers-wan-i2v", **{**fields, image_field: None})
    assert without.generation["options"] == {}


def test_every_closed_last_image_field_is_one_the_engine_can_name() -> None:
    for endpoint_id in CLOSED:
        for name, role in CATALOGUE[endpoint_id].image_fields.items():
            assert (role == "last_image") == (name in LAST_IMAGE_FIELDS), (endpoint_id, name)


def other_value(endpoint_id: str, name: str, schema: dict[str, Any], current: Any) -> Any:
    """A valid value for field `name` other than `current`: the next enum value, the other boolean..."""
    special: dict[str, Any] = {
        "prompt": "a dog in the snow",
        "negative_prompt": "rain",
        "cfg_scale": 0.9,
        "seed": 7,
        "num_frames": 40,
        "camera_movement": "zoom_in",
        "static_mask_url": "https://example.com/mask.png",
        "dynamic_masks": [{"mask_url": "https://example.com/mask.png", "trajectories": [{"x": 1, "y": 2}]}],
    }
    if name in special:
        return special[name]
    choices = schema.get("enum") or next((entry["enum"] for entry in schema.get("anyOf", []) if "enum" in entry), None)
    if choices is not None:
        return next(choice for choice in choices if choice != current)
    assert schema.get("type") == "boolean", f"{endpoint_id}: no test value for {name}"
    return not current


@pytest.mark.parametrize("endpoint_id", CLOSED)
def test_every_closed_field_reaches_the_engine_or_the_log(endpoint_id: str) -> None:
    """Change any one field of a closed schema: the engine's request or the job's notes change. Nothing is lost."""
    spec = CATALOGUE[endpoint_id]
    properties = spec.input_model.model_json_schema()["properties"]
    base_fields = {"seed": 1} if "seed" in properties else {}
    square = ImageDimensions(1000, 1000)  # "auto" aspects then differ from every fixed one

    def planned(**fields: Any) -> tuple[dict[str, Any], list[str]]:
        request = spec.input_model.model_validate({**spec.example, **base_fields, **fields})
        images = {name: square for name in spec.image_fields if getattr(request, name, None) is not None}
        result = spec.plan_generation(request, images, "diffusers-wan-i2v")
        seedless = {key: value for key, value in result.generation.items() if key != "seed" or "seed" in properties}
        return seedless, result.notes

    baseline = planned()
    request = spec.input_model.model_validate({**spec.example, **base_fields})
    for name, schema in properties.items():
        if name in spec.image_fields:
            continue  # images: the role test above
        changed = planned(**{name: other_value(endpoint_id, name, schema, getattr(request, name))})
        assert changed != baseline, f"{endpoint_id}: {name} changes neither the engine's request nor the log"


@pytest.mark.parametrize("endpoint_id", sorted(CATALOGUE))
def test_served_by_says_how_a_binding_serves_the_endpoint(endpoint_id: str) -> None:
    spec = CATALOGUE[endpoint_id]
    assert spec.served_by("relay") == "relay"
    assert spec.served_by("diffusers-wan-i2v") == ("mapped" if spec.kind == "closed" else "local")
