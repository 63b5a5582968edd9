"""fal-ai/magi-distilled/image-to-video: served by an open autoregressive model (see engines)."""

from __future__ import annotations

from collections.abc import Mapping

from framecast.endpoints.sizing import video_size
from framecast.endpoints.spec import (
    EndpointSpec,
    GenerationPlan,
    ImageDimensions,
    choose_seed,
    unknown_field_notes,
)
from framecast.engines.names import EngineTraits
from framecast.schemas.magi import MagiImageToVideoInput, MagiOutput

# MAGI-1 generates 24 fps video in chunks of 24 frames.
MAGI_FRAMES_PER_SECOND = 24


def plan_magi(
    request: MagiImageToVideoInput, images: Mapping[str, ImageDimensions], _engine: EngineTraits
) -> GenerationPlan:
    width, height = video_size(request.resolution, request.aspect_ratio, images.get("image_url"))
    return GenerationPlan(
        generation={
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "num_frames": request.num_frames,
            "frames_per_second": MAGI_FRAMES_PER_SECOND,
            "num_inference_steps": int(request.num_inference_steps),
            "seed": choose_seed(request.seed),
        },
        notes=unknown_field_notes(request),
    )


MAGI_ENDPOINTS = [
    EndpointSpec(
        endpoint_id="fal-ai/magi-distilled/image-to-video",
        title="MAGI-1 (distilled) image-to-video",
        kind="open",
        input_model=MagiImageToVideoInput,
        output_model=MagiOutput,
        image_fields={"image_url": "image"},
        plan=plan_magi,
        example={
            "prompt": "Close-up shot: the old sea captain stares intently, pipe in mouth, wisps of smoke curling "
            "around his weathered face. The camera begins to pull back out over the ocean. Finally, the camera "
            "sinks below the waves deeply, fading to dark blue and finally to black.",
            "image_url": "https://raw.githubusercontent.com/painebenjamin/pointy-seeds/refs/heads/main/"
            "captain-start.jpg",
            "num_frames": 96,
            "resolution": "720p",
            "num_inference_steps": 16,
            "enable_safety_checker": True,
            "aspect_ratio": "auto",
        },
        engine_family="magi",
        description="Generate a video from an image.",
    ),
]
