"""The endpoint catalogue: each endpoint's schema and how its documented fields map to engine terms.

Parameter mapping belongs to the endpoint, not the engine: an endpoint turns its
validated input into a `GenerationPlan` (sizes, frame count, seed...) at submit
time, in the API process, so the seed is fixed once and survives retries.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from framecast.schemas.wan import WanI2VInput, WanI2VOutput

SIZE_MULTIPLE = 16


@dataclass(frozen=True)
class ImageDimensions:
    width: int
    height: int


@dataclass(frozen=True)
class GenerationPlan:
    """Engine-facing parameters (see `framecast.engines.base.GenerationRequest`) and notes for the job log."""

    generation: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    # Input field holding an image URL -> the engine's image role ("image", "last_image").
    image_fields: Mapping[str, str]
    plan: Callable[[Any, Mapping[str, ImageDimensions]], GenerationPlan]
    summary: str = ""


def random_seed() -> int:
    return secrets.randbelow(2**31)


def round_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, round(value / multiple) * multiple)


def size_for_area(area_pixels: int, aspect: float) -> tuple[int, int]:
    """Width and height (multiples of 16) with about `area_pixels` pixels and width/height ≈ `aspect`."""
    height = math.sqrt(area_pixels / aspect)
    return round_to_multiple(height * aspect), round_to_multiple(height)


WAN_SIZES = {
    ("480p", "16:9"): (832, 480),
    ("480p", "9:16"): (480, 832),
    ("480p", "1:1"): (624, 624),
    ("720p", "16:9"): (1280, 720),
    ("720p", "9:16"): (720, 1280),
    ("720p", "1:1"): (960, 960),
}
# Wan is trained between roughly 1:2.3 and 2.3:1; a panorama is cropped to that.
WAN_MAX_ASPECT = 21 / 9


def wan_size(resolution: str, aspect_ratio: str, image: ImageDimensions) -> tuple[int, int]:
    """fal's Wan sizes; 'auto' keeps the image's aspect at the resolution's pixel count."""
    if aspect_ratio != "auto":
        return WAN_SIZES[(resolution, aspect_ratio)]
    width, height = WAN_SIZES[(resolution, "16:9")]
    aspect = min(max(image.width / image.height, 1 / WAN_MAX_ASPECT), WAN_MAX_ASPECT)
    return size_for_area(width * height, aspect)


def unknown_field_notes(model: BaseModel) -> list[str]:
    extra = sorted((model.model_extra or {}).keys())
    return [f"Ignored unknown input fields: {', '.join(extra)}"] if extra else []


def plan_wan_i2v(request: WanI2VInput, images: Mapping[str, ImageDimensions]) -> GenerationPlan:
    width, height = wan_size(request.resolution, request.aspect_ratio, images["image_url"])
    notes = unknown_field_notes(request)
    if request.enable_prompt_expansion:
        notes.append("enable_prompt_expansion: no prompt-expansion model is configured; the prompt is used as given")
    if request.enable_safety_checker:
        notes.append("enable_safety_checker: no safety checker is configured; the output was NOT checked")
    if request.acceleration != "none":
        notes.append(f"acceleration={request.acceleration}: step caching is not available for this engine yet")
    seed = request.seed if request.seed is not None else random_seed()
    return GenerationPlan(
        generation={
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": width,
            "height": height,
            "num_frames": request.num_frames,
            "frames_per_second": request.frames_per_second,
            "num_inference_steps": request.num_inference_steps,
            "guidance_scale": request.guide_scale,
            "shift": request.shift,
            "seed": seed,
        },
        notes=notes,
    )


def build_catalogue() -> dict[str, EndpointSpec]:
    specs = [
        EndpointSpec(
            endpoint_id="fal-ai/wan-i2v",
            input_model=WanI2VInput,
            output_model=WanI2VOutput,
            image_fields={"image_url": "image"},
            plan=plan_wan_i2v,
            summary="Wan 2.1 image-to-video",
        ),
    ]
    return {spec.endpoint_id: spec for spec in specs}
