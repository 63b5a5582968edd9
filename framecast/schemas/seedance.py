"""fal-ai/bytedance/seedance/v1/lite/image-to-video (seed 003 §4, plus the fields of newer clients)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from framecast.schemas.common import INTEGER_AS_STRING, FalInput
from framecast.schemas.files import File, VideoSeedOutput

# The seed documents "5" and "10"; @fal-ai/client 1.10 types allow 2 to 12 seconds.
Duration = Annotated[Literal["2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"], INTEGER_AS_STRING]


class SeedanceImageToVideoInput(FalInput):
    prompt: str = Field(..., description="The text prompt used to generate the video")
    resolution: Literal["480p", "720p", "1080p"] = Field(
        "720p", description="Video resolution - 480p for faster generation, 720p for higher quality"
    )
    duration: Duration = Field("5", description="Duration of the video in seconds")
    camera_fixed: bool = Field(False, description="Whether to fix the camera position")
    seed: int | None = Field(None, ge=-1, description="Random seed to control video generation. Use -1 for random.")
    image_url: str = Field(..., description="The URL of the image used to generate video")
    end_image_url: str | None = Field(None, description="The URL of the image the video ends with. Defaults to None.")
    aspect_ratio: Literal["21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "auto"] = Field(
        "auto", description="The aspect ratio of the generated video"
    )
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
    num_frames: int | None = Field(
        None, ge=1, le=12 * 24, description="Number of frames to generate; overrides duration when given."
    )


class SeedanceOutput(VideoSeedOutput):
    video: File = Field(..., description="Generated video file")
    seed: int = Field(..., description="Seed used for generation")
