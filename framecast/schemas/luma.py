"""fal-ai/luma-dream-machine/ray-2-flash/image-to-video (seed 003 §9)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from framecast.schemas.common import FalInput
from framecast.schemas.files import File, VideoOutput


class LumaRay2ImageToVideoInput(FalInput):
    prompt: str = Field(..., description="The prompt for the video")
    # Required by the seed's example, optional in @fal-ai/client 1.10 types: either frame may be given alone.
    image_url: str | None = Field(
        None, description="Initial image to start the video from. Can be used together with end_image_url."
    )
    end_image_url: str | None = Field(
        None,
        description="Final image to end the video with. Can be used together with image_url.",
        validate_default=True,
    )
    aspect_ratio: Literal["16:9", "9:16", "4:3", "3:4", "21:9", "9:21"] = Field(
        "16:9", description="The aspect ratio of the generated video"
    )
    loop: bool = Field(False, description="Whether the video should loop (end of video is blended with the beginning)")
    resolution: Literal["540p", "720p", "1080p"] = Field(
        "540p", description="The resolution of the generated video (720p costs 2x more, 1080p costs 4x more)"
    )
    # The seed lists only 5s; @fal-ai/client 1.10 types add 9s.
    duration: Literal["5s", "9s"] = Field("5s", description="The duration of the generated video")

    @field_validator("end_image_url")
    @classmethod
    def check_an_image(cls, end_image_url: str | None, info: ValidationInfo) -> str | None:
        # Only when image_url itself validated (it is in `data`) and is absent.
        if end_image_url is None and "image_url" in info.data and info.data["image_url"] is None:
            raise ValueError("give image_url, end_image_url or both: this endpoint animates an image")
        return end_image_url


class LumaOutput(VideoOutput):
    video: File = Field(..., description="URL of the generated video")
