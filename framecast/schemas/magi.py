"""fal-ai/magi-distilled/image-to-video (seed 003 §10)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from framecast.schemas.common import INTEGER_AS_STRING, FalInput
from framecast.schemas.files import VideoSeedOutput


class MagiImageToVideoInput(FalInput):
    prompt: str = Field(..., description="The text prompt to guide video generation.")
    image_url: str = Field(
        ...,
        description="URL of the input image to represent the first frame of the video. If the input image does not "
        "match the chosen aspect ratio, it is resized and center cropped.",
    )
    num_frames: int = Field(
        96,
        ge=96,
        le=192,
        description="Number of frames to generate. Must be between 96 and 192 (inclusive). Each additional 24 "
        "frames beyond 96 incurs an additional billing unit.",
    )
    seed: int | None = Field(None, description="Random seed for reproducibility. If None, a random seed is chosen.")
    resolution: Literal["480p", "720p"] = Field(
        "720p",
        description="Resolution of the generated video (480p or 720p). 480p is 0.5 billing units, and 720p is 1 "
        "billing unit.",
    )
    # The seed documents 4-32 as strings and sends the integer 16; newer clients also offer 64.
    num_inference_steps: Annotated[Literal["4", "8", "16", "32", "64"], INTEGER_AS_STRING] = Field(
        "16",
        description="Number of inference steps for sampling. Higher values give better quality but take longer.",
    )
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
    aspect_ratio: Literal["auto", "16:9", "9:16", "1:1"] = Field(
        "auto",
        description="Aspect ratio of the generated video. If 'auto', the aspect ratio will be determined "
        "automatically based on the input image.",
    )


class MagiOutput(VideoSeedOutput):
    pass
