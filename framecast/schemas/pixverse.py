"""PixVerse v4.5: fal-ai/pixverse/v4.5/image-to-video and fal-ai/pixverse/v4.5/transition (seed 003 §8)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from framecast.schemas.common import INTEGER_AS_STRING, FalInput
from framecast.schemas.files import VideoOutput

AspectRatio = Literal["16:9", "4:3", "1:1", "3:4", "9:16"]
Resolution = Literal["360p", "540p", "720p", "1080p"]
Duration = Annotated[Literal["5", "8"], INTEGER_AS_STRING]
Style = Literal["anime", "3d_animation", "clay", "comic", "cyberpunk"]
SEED_DESCRIPTION = (
    "The same seed and the same prompt given to the same version of the model will output the same video every time."
)


class PixverseInputBase(FalInput):
    prompt: str = Field(..., description="The prompt for the video")
    aspect_ratio: AspectRatio = Field("16:9", description="The aspect ratio of the generated video")
    resolution: Resolution = Field("720p", description="The resolution of the generated video")
    duration: Duration = Field(
        "5",
        description="The duration of the generated video in seconds. 8s videos cost double. 1080p videos are "
        "limited to 5 seconds",
    )
    negative_prompt: str = Field("", description="Negative prompt to be used for the generation")
    style: Style | None = Field(None, description="The style of the generated video")
    seed: int | None = Field(None, description=SEED_DESCRIPTION)

    @field_validator("duration")
    @classmethod
    def check_1080p_duration(cls, duration: str, info: ValidationInfo) -> str:
        if info.data.get("resolution") == "1080p" and duration != "5":
            raise ValueError("1080p videos are limited to 5 seconds: use duration '5' or a lower resolution")
        return duration


class PixverseImageToVideoInput(PixverseInputBase):
    image_url: str = Field(..., description="URL of the image to use as the first frame")
    # @fal-ai/client 1.10 types offer camera movements (horizontal_left ... fix_bg); passed on as given.
    camera_movement: str | None = Field(None, description="The type of camera movement to apply to the video")


class PixverseTransitionInput(PixverseInputBase):
    """`TransitionRequest`. The seed names the last frame `last_image_url`; newer clients send `end_image_url`."""

    prompt: str = Field(..., description="The prompt for the transition")
    first_image_url: str = Field(..., description="URL of the image to use as the first frame")
    last_image_url: str | None = Field(None, description="URL of the image to use as the last frame")
    end_image_url: str | None = Field(
        None, description="URL of the image to use as the last frame (the name newer clients send)"
    )

    @field_validator("end_image_url")
    @classmethod
    def check_one_last_frame(cls, end_image_url: str | None, info: ValidationInfo) -> str | None:
        if end_image_url is not None and info.data.get("last_image_url") is not None:
            raise ValueError("give the last frame as last_image_url or end_image_url, not both")
        return end_image_url


class PixverseOutput(VideoOutput):
    pass
