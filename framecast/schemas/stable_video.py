"""fal-ai/stable-video (seed 001)."""

from __future__ import annotations

from pydantic import Field

from framecast.schemas.common import FalInput
from framecast.schemas.files import File, VideoSeedOutput


class StableVideoInput(FalInput):
    image_url: str = Field(..., description="The URL of the image to use as a starting point for the generation.")
    seed: int | None = Field(
        None,
        description="The same seed and the same prompt given to the same version of Stable Diffusion will output "
        "the same image every time.",
    )
    # Bounds are SVD's conditioning range; the documentation gives none.
    motion_bucket_id: int = Field(
        127,
        ge=1,
        le=255,
        description="The motion bucket id determines the motion of the generated video. The higher the number, "
        "the more motion there will be.",
    )
    cond_aug: float = Field(
        0.02,
        ge=0,
        le=10,
        description="The conditoning augmentation determines the amount of noise that will be added to the "
        "conditioning frame. The higher the number, the more noise there will be, and the less the video will "
        "look like the initial image. Increase it for more motion.",
    )
    fps: int = Field(25, ge=1, le=100, description="The frames per second of the generated video.")


class StableVideoOutput(VideoSeedOutput):
    video: File = Field(..., description="Generated video")
    seed: int = Field(..., description="Seed for random number generator")
