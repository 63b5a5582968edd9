"""fal-ai/minimax/hailuo-02/pro/image-to-video (seed 003 §5, plus `end_image_url` from newer clients)."""

from __future__ import annotations

from pydantic import Field

from framecast.schemas.common import FalInput
from framecast.schemas.files import VideoOutput


class HailuoImageToVideoInput(FalInput):
    prompt: str = Field(..., description="The prompt for the video")
    image_url: str = Field(..., description="The URL of the image to use as the first frame")
    prompt_optimizer: bool = Field(True, description="Whether to use the model's prompt optimizer")
    end_image_url: str | None = Field(None, description="The URL of the image to use as the last frame")


class HailuoOutput(VideoOutput):
    pass
