"""fal-ai/stable-video: Stable Video Diffusion img2vid-xt."""

from __future__ import annotations

from collections.abc import Mapping

from framecast.endpoints.spec import EndpointSpec, GenerationPlan, ImageDimensions, choose_seed, unknown_field_notes
from framecast.engines.names import EngineTraits
from framecast.schemas.stable_video import StableVideoInput, StableVideoOutput

# img2vid-xt makes 25 frames at 1024x576 (either orientation), in 25 steps, with guidance rising 1 -> 3.
SVD_FRAMES = 25
SVD_STEPS = 25
SVD_MAX_GUIDANCE = 3.0
SVD_LANDSCAPE = (1024, 576)


def plan_stable_video(
    request: StableVideoInput, images: Mapping[str, ImageDimensions], _engine: EngineTraits
) -> GenerationPlan:
    image = images.get("image_url")
    width, height = SVD_LANDSCAPE
    if image is not None and image.height > image.width:
        width, height = height, width
    return GenerationPlan(
        generation={
            "prompt": "",
            "width": width,
            "height": height,
            "num_frames": SVD_FRAMES,
            "frames_per_second": request.fps,
            "num_inference_steps": SVD_STEPS,
            "guidance_scale": SVD_MAX_GUIDANCE,
            "seed": choose_seed(request.seed),
            # cond_aug is SVD's noise augmentation of the conditioning frame; fps also conditions the model.
            "options": {
                "motion_bucket_id": request.motion_bucket_id,
                "noise_aug_strength": request.cond_aug,
                "conditioning_fps": request.fps,
            },
        },
        notes=unknown_field_notes(request),
    )


STABLE_VIDEO_ENDPOINTS = [
    EndpointSpec(
        endpoint_id="fal-ai/stable-video",
        title="Stable Video Diffusion image-to-video",
        kind="open",
        input_model=StableVideoInput,
        output_model=StableVideoOutput,
        image_fields={"image_url": "image"},
        plan=plan_stable_video,
        example={
            "image_url": "https://storage.googleapis.com/falserverless/model_tests/svd/rocket.png",
            "motion_bucket_id": 127,
            "cond_aug": 0.02,
            "fps": 25,
        },
        engine_family="stable-video",
        description="High Quality Stable Video Diffusion Image to Video.",
    ),
]
