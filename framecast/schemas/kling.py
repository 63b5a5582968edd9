"""Kling image-to-video (seed 003 §3/§6): v2.1 standard and the variants that share or extend its schema."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from framecast.schemas.common import INTEGER_AS_STRING, FalInput
from framecast.schemas.files import VideoOutput

KLING_NEGATIVE_PROMPT = "blur, distort, and low quality"
Duration = Annotated[Literal["5", "10"], INTEGER_AS_STRING]


class KlingImageToVideoInput(FalInput):
    """`ImageToVideoV21StandardRequest` (also the v2.1/v2 master and v2.1 pro schema)."""

    prompt: str = Field(..., description="The prompt for the video")
    image_url: str = Field(..., description="URL of the image to be used for the video")
    duration: Duration = Field("5", description="The duration of the generated video in seconds")
    negative_prompt: str = Field(KLING_NEGATIVE_PROMPT, description="The negative prompt for the video")
    cfg_scale: float = Field(
        0.5,
        ge=0,
        le=1,
        description="The CFG (Classifier Free Guidance) scale is a measure of how close you want the model to stick "
        "to your prompt.",
    )


class KlingProImageToVideoInput(KlingImageToVideoInput):
    """`ProImageToVideoRequest`: fal-ai/kling-video/v1.6/pro/image-to-video."""

    aspect_ratio: Literal["16:9", "9:16", "1:1"] = Field(
        "16:9", description="The aspect ratio of the generated video frame"
    )
    tail_image_url: str | None = Field(None, description="URL of the image to be used for the end of the video")


class Trajectory(BaseModel):
    x: int = Field(..., description="X coordinate of the motion trajectory")
    y: int = Field(..., description="Y coordinate of the motion trajectory")


class DynamicMask(BaseModel):
    mask_url: str = Field(
        ...,
        description="URL of the image for Dynamic Brush Application Area (Mask image created by users using the "
        "motion brush)",
    )
    trajectories: list[Trajectory] = Field(default_factory=list, description="List of trajectories")


class KlingV1ImageToVideoInput(KlingImageToVideoInput):
    """`V1ImageToVideoRequest`: fal-ai/kling-video/v1/standard/image-to-video."""

    tail_image_url: str | None = Field(None, description="URL of the image to be used for the end of the video")
    static_mask_url: str | None = Field(
        None,
        description="URL of the image for Static Brush Application Area (Mask image created by users using the "
        "motion brush)",
    )
    dynamic_masks: list[DynamicMask] | None = Field(None, description="List of dynamic masks")


class KlingV15ProImageToVideoInput(KlingV1ImageToVideoInput):
    """fal-ai/kling-video/v1.5/pro/image-to-video: the v1 schema plus `aspect_ratio`."""

    aspect_ratio: Literal["16:9", "9:16", "1:1"] = Field(
        "16:9", description="The aspect ratio of the generated video frame"
    )


class KlingOutput(VideoOutput):
    pass
