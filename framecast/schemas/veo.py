"""fal-ai/veo2/image-to-video (seed 003 §1)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from framecast.schemas.common import FalInput
from framecast.schemas.files import VideoOutput


class Veo2ImageToVideoInput(FalInput):
    prompt: str = Field(..., description="The text prompt describing how the image should be animated")
    image_url: str = Field(..., description="URL of the input image to animate. Should be 720p or higher resolution.")
    aspect_ratio: Literal["auto", "auto_prefer_portrait", "16:9", "9:16"] = Field(
        "auto", description="The aspect ratio of the generated video"
    )
    duration: Literal["5s", "6s", "7s", "8s"] = Field(
        "5s", description="The duration of the generated video in seconds"
    )


class Veo2Output(VideoOutput):
    pass
