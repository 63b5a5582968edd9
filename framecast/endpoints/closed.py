"""Closed-model endpoints (Veo 2, Kling, Seedance, Hailuo-02, PixVerse, Luma Ray-2 Flash).

Their schemas are served exactly. A relay forwards the validated input as it is;
these plans translate it for the case where an operator maps the endpoint to a
local open engine (docs/closed-models.md). Each plan reads the closed request in
engine-neutral terms (`ClosedRequest`: seconds, size, guidance relative to the
closed model's default), and `map_onto` puts that in the bound engine's terms:
frames at the engine's frame rate, its steps, its guidance. Every option the
engine cannot honour becomes a WARN line in the job's log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from framecast.endpoints.sizing import frames_for_duration, parse_duration_s, video_size
from framecast.endpoints.spec import (
    EndpointSpec,
    GenerationPlan,
    ImageDimensions,
    choose_seed,
    unknown_field_notes,
    unsupported_option_note,
)
from framecast.engines.names import EngineTraits
from framecast.schemas.kling import (
    KlingImageToVideoInput,
    KlingOutput,
    KlingProImageToVideoInput,
    KlingV1ImageToVideoInput,
    KlingV15ProImageToVideoInput,
)
from framecast.schemas.luma import LumaOutput, LumaRay2ImageToVideoInput
from framecast.schemas.minimax import HailuoImageToVideoInput, HailuoOutput
from framecast.schemas.pixverse import (
    PixverseImageToVideoInput,
    PixverseInputBase,
    PixverseOutput,
    PixverseTransitionInput,
)
from framecast.schemas.seedance import SeedanceImageToVideoInput, SeedanceOutput
from framecast.schemas.veo import Veo2ImageToVideoInput, Veo2Output

# Hailuo-02 Pro makes 6 s of 1080p and has no size or duration fields.
HAILUO_DURATION_S = 6
HAILUO_RESOLUTION = "1080p"
# Kling's cfg_scale runs 0-1 and defaults to 0.5; its default maps to the engine's default guidance.
KLING_DEFAULT_CFG = 0.5
KLING_RESOLUTION = "720p"
VEO_RESOLUTION = "720p"
# The closed schemas' names for the video's last frame. An engine that cannot take a last frame drops it with a
# WARN naming the field, instead of failing the job (an open first-last-frame endpoint fails: it exists for that).
LAST_IMAGE_FIELDS = ("tail_image_url", "end_image_url", "last_image_url")
NOTE_TEXT_LIMIT = 60


@dataclass(frozen=True)
class ClosedRequest:
    """A closed model's request in engine-neutral terms, with the notes the closed schema itself gives."""

    prompt: str
    size: tuple[int, int]
    duration_s: float
    notes: list[str]
    seed: int | None = None
    negative_prompt: str = ""
    # An exact frame count (Seedance's `num_frames`); otherwise the duration at the engine's frame rate.
    num_frames: int | None = None
    # Guidance relative to the closed model's default: 1 = the engine's default guidance, 0 = none (guidance 1).
    relative_guidance: float = 1.0


def shorten(text: str) -> str:
    return text if len(text) <= NOTE_TEXT_LIMIT else text[: NOTE_TEXT_LIMIT - 1] + "…"


def map_onto(closed: ClosedRequest, engine: EngineTraits, images: Mapping[str, ImageDimensions]) -> GenerationPlan:
    """`closed` in `engine`'s terms; what the engine does not take is dropped with a note, never silently."""
    notes = list(closed.notes)
    prompt, negative_prompt = closed.prompt, closed.negative_prompt
    if not engine.takes_prompt:
        consequence = f"{engine.family} takes no text prompt; the video follows the image only"
        notes.append(unsupported_option_note("prompt", shorten(prompt), consequence))
        prompt = ""
    if negative_prompt and not engine.takes_negative_prompt:
        consequence = f"{engine.family}, as mapped, takes no negative prompt; ignored"
        notes.append(unsupported_option_note("negative_prompt", shorten(negative_prompt), consequence))
        negative_prompt = ""
    options: dict[str, Any] = {}
    last_image_field = next((name for name in LAST_IMAGE_FIELDS if name in images), None)
    if last_image_field is not None:
        options["last_image_field"] = last_image_field
    width, height = closed.size
    return GenerationPlan(
        generation={
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "width": width,
            "height": height,
            "num_frames": closed.num_frames or frames_for_duration(closed.duration_s, engine.frames_per_second),
            "frames_per_second": engine.frames_per_second,
            "num_inference_steps": engine.num_inference_steps,
            "guidance_scale": 1.0 + (engine.guidance_scale - 1.0) * closed.relative_guidance,
            "seed": choose_seed(closed.seed),
            "options": options,
        },
        notes=notes,
    )


def plan_veo2(
    request: Veo2ImageToVideoInput, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    image = images.get("image_url")
    aspect_ratio = request.aspect_ratio
    if aspect_ratio == "auto_prefer_portrait":
        aspect_ratio = "16:9" if image is not None and image.width > image.height else "9:16"
    closed = ClosedRequest(
        prompt=request.prompt,
        size=video_size(VEO_RESOLUTION, aspect_ratio, image),
        duration_s=parse_duration_s(request.duration),
        notes=unknown_field_notes(request),
    )
    return map_onto(closed, engine, images)


def plan_kling(
    request: KlingImageToVideoInput, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    notes = unknown_field_notes(request)
    if isinstance(request, KlingV1ImageToVideoInput):
        if request.static_mask_url is not None:
            notes.append(unsupported_option_note("static_mask_url", "…", "motion brushes are not supported; ignored"))
        if request.dynamic_masks:
            notes.append(
                unsupported_option_note(
                    "dynamic_masks", f"{len(request.dynamic_masks)} masks", "motion brushes are not supported; ignored"
                )
            )
    closed = ClosedRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        # v2.1, v2 and v1 have no aspect_ratio field: they follow the image.
        size=video_size(KLING_RESOLUTION, getattr(request, "aspect_ratio", "auto"), images.get("image_url")),
        duration_s=parse_duration_s(request.duration),
        relative_guidance=request.cfg_scale / KLING_DEFAULT_CFG,
        notes=notes,
    )
    return map_onto(closed, engine, images)


def plan_seedance(
    request: SeedanceImageToVideoInput, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    notes = unknown_field_notes(request)
    if request.camera_fixed:
        notes.append(unsupported_option_note("camera_fixed", True, "the engine has no camera lock; not enforced"))
    closed = ClosedRequest(
        prompt=request.prompt,
        size=video_size(request.resolution, request.aspect_ratio, images.get("image_url")),
        duration_s=parse_duration_s(request.duration),
        num_frames=request.num_frames,
        seed=request.seed,
        notes=notes,
    )
    return map_onto(closed, engine, images)


def plan_hailuo(
    request: HailuoImageToVideoInput, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    notes = unknown_field_notes(request)
    if request.prompt_optimizer:
        notes.append(
            unsupported_option_note("prompt_optimizer", True, "no prompt optimizer is configured; prompt used as given")
        )
    closed = ClosedRequest(
        prompt=request.prompt,
        size=video_size(HAILUO_RESOLUTION, "auto", images.get("image_url")),
        duration_s=HAILUO_DURATION_S,
        notes=notes,
    )
    return map_onto(closed, engine, images)


def plan_pixverse(
    request: PixverseInputBase, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    notes = unknown_field_notes(request)
    if request.style is not None:
        notes.append(unsupported_option_note("style", request.style, "styles are not supported; ignored"))
    camera_movement = getattr(request, "camera_movement", None)
    if camera_movement is not None:
        notes.append(unsupported_option_note("camera_movement", camera_movement, "not supported; ignored"))
    closed = ClosedRequest(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        size=video_size(request.resolution, request.aspect_ratio, None),
        duration_s=parse_duration_s(request.duration),
        seed=request.seed,
        notes=notes,
    )
    return map_onto(closed, engine, images)


def plan_luma(
    request: LumaRay2ImageToVideoInput, images: Mapping[str, ImageDimensions], engine: EngineTraits
) -> GenerationPlan:
    notes = unknown_field_notes(request)
    if request.loop:
        notes.append(unsupported_option_note("loop", True, "loop blending is not supported; the video does not loop"))
    closed = ClosedRequest(
        prompt=request.prompt,
        size=video_size(request.resolution, request.aspect_ratio, None),
        duration_s=parse_duration_s(request.duration),
        notes=notes,
    )
    return map_onto(closed, engine, images)


KLING_EXAMPLE = {
    "prompt": "As the sun dips below the horizon, painting the sky in fiery hues of orange and purple, powerful "
    "waves relentlessly crash against jagged, dark rocks, their white foam a stark contrast to the deepening "
    "twilight; the textured surface of the rocks, wet and glistening, reflects the vibrant colors, creating a "
    "mesmerizing spectacle of nature's raw power and breathtaking beauty",
    "image_url": "https://v3.fal.media/files/panda/W-_J46zuJDQnUhqkKm9Iv_image.webp",
    "duration": "5",
    "negative_prompt": "blur, distort, and low quality",
    "cfg_scale": 0.5,
}
KLING_DESCRIPTION = "Kling image-to-video (closed model)."
PIXVERSE_EXAMPLE = {
    "prompt": "A woman warrior with her hammer walking with his glacier wolf.",
    "aspect_ratio": "16:9",
    "resolution": "720p",
    "duration": "5",
    "negative_prompt": "blurry, low quality, low resolution, pixelated, noisy, grainy, out of focus, poorly lit, "
    "poorly exposed, poorly composed, poorly framed, poorly cropped, poorly color corrected, poorly color graded",
}
PIXVERSE_IMAGE = "https://v3.fal.media/files/zebra/qL93Je8ezvzQgDOEzTjKF_KhGKZTEebZcDw6T5rwQPK_output.png"
TOKYO_PROMPT = "A stylish woman walks down a Tokyo street filled with warm glowing neon and animated city signage."
TOKYO_IMAGE = "https://fal.media/files/elephant/8kkhB12hEZI2kkbU8pZPA_test.jpeg"


def kling_endpoint(path: str, input_model: type[KlingImageToVideoInput], title: str) -> EndpointSpec:
    tail = {"tail_image_url": "last_image"} if "tail_image_url" in input_model.model_fields else {}
    return EndpointSpec(
        endpoint_id=f"fal-ai/kling-video/{path}/image-to-video",
        title=title,
        kind="closed",
        input_model=input_model,
        output_model=KlingOutput,
        image_fields={"image_url": "image", **tail},
        plan=plan_kling,
        example=KLING_EXAMPLE,
        engine_family="kling",
        description=KLING_DESCRIPTION,
    )


CLOSED_ENDPOINTS = [
    EndpointSpec(
        endpoint_id="fal-ai/veo2/image-to-video",
        title="Veo 2 image-to-video",
        kind="closed",
        input_model=Veo2ImageToVideoInput,
        output_model=Veo2Output,
        image_fields={"image_url": "image"},
        plan=plan_veo2,
        example={
            "prompt": "A lego chef cooking eggs",
            "image_url": "https://fal.media/files/elephant/6fq8JDSjb1osE_c3J_F2H.png",
            "aspect_ratio": "auto",
            "duration": "5s",
        },
        engine_family="veo2",
        description="Generate videos by animating an input image using Google's Veo 2 model.",
    ),
    kling_endpoint("v2.1/standard", KlingImageToVideoInput, "Kling 2.1 Standard image-to-video"),
    kling_endpoint("v2.1/pro", KlingImageToVideoInput, "Kling 2.1 Pro image-to-video"),
    kling_endpoint("v2.1/master", KlingImageToVideoInput, "Kling 2.1 Master image-to-video"),
    kling_endpoint("v2/master", KlingImageToVideoInput, "Kling 2.0 Master image-to-video"),
    kling_endpoint("v1.6/pro", KlingProImageToVideoInput, "Kling 1.6 Pro image-to-video"),
    kling_endpoint("v1.5/pro", KlingV15ProImageToVideoInput, "Kling 1.5 Pro image-to-video"),
    kling_endpoint("v1/standard", KlingV1ImageToVideoInput, "Kling 1.0 Standard image-to-video"),
    EndpointSpec(
        endpoint_id="fal-ai/bytedance/seedance/v1/lite/image-to-video",
        title="Seedance 1.0 Lite image-to-video",
        kind="closed",
        input_model=SeedanceImageToVideoInput,
        output_model=SeedanceOutput,
        image_fields={"image_url": "image", "end_image_url": "last_image"},
        plan=plan_seedance,
        example={
            "prompt": "A little dog is running in the sunshine. The camera follows the dog as it plays in a garden.",
            "resolution": "720p",
            "duration": "5",
            "image_url": "https://fal.media/files/koala/f_xmiodPjhiKjdBkFmTu1.png",
        },
        engine_family="seedance",
        description="Generate videos from an image and text using Bytedance's Seedance 1.0 Lite model.",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/minimax/hailuo-02/pro/image-to-video",
        title="MiniMax Hailuo-02 Pro image-to-video",
        kind="closed",
        input_model=HailuoImageToVideoInput,
        output_model=HailuoOutput,
        image_fields={"image_url": "image", "end_image_url": "last_image"},
        plan=plan_hailuo,
        example={
            "prompt": "Man walked into winter cave with polar bear",
            "image_url": "https://storage.googleapis.com/falserverless/model_tests/minimax/"
            "1749891352437225630-389852416840474630_1749891352.png",
            "prompt_optimizer": True,
        },
        engine_family="hailuo-02",
        description="MiniMax Hailuo-02 Image To Video API (Pro, 1080p): Advanced image-to-video generation model "
        "with 1080p resolution",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/pixverse/v4.5/image-to-video",
        title="PixVerse v4.5 image-to-video",
        kind="closed",
        input_model=PixverseImageToVideoInput,
        output_model=PixverseOutput,
        image_fields={"image_url": "image"},
        plan=plan_pixverse,
        example={**PIXVERSE_EXAMPLE, "image_url": PIXVERSE_IMAGE},
        engine_family="pixverse-4.5",
        description="Image To Video V4 5",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/pixverse/v4.5/transition",
        title="PixVerse v4.5 transition",
        kind="closed",
        input_model=PixverseTransitionInput,
        output_model=PixverseOutput,
        image_fields={"first_image_url": "image", "last_image_url": "last_image", "end_image_url": "last_image"},
        plan=plan_pixverse,
        example={**PIXVERSE_EXAMPLE, "first_image_url": PIXVERSE_IMAGE, "last_image_url": TOKYO_IMAGE},
        engine_family="pixverse-4.5",
        description="A transition from a first frame to a last frame.",
    ),
    EndpointSpec(
        endpoint_id="fal-ai/luma-dream-machine/ray-2-flash/image-to-video",
        title="Luma Ray-2 Flash image-to-video",
        kind="closed",
        input_model=LumaRay2ImageToVideoInput,
        output_model=LumaOutput,
        image_fields={"image_url": "image", "end_image_url": "last_image"},
        plan=plan_luma,
        example={
            "prompt": TOKYO_PROMPT,
            "image_url": TOKYO_IMAGE,
            "aspect_ratio": "16:9",
            "resolution": "540p",
            "duration": "5s",
        },
        engine_family="luma-ray-2-flash",
        description="Luma's state of the art Ray2 model for image-to-video generation.",
    ),
]
