"""Wan 2.1: fal-ai/wan-i2v (seed 003 §7), fal-ai/wan-flf2v (seed 002), fal-ai/wan-pro/image-to-video (seed 003 §2)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from framecast.schemas.common import FalInput
from framecast.schemas.files import VideoOutput, VideoSeedOutput

WAN_DEFAULT_NEGATIVE_PROMPT = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, picture, still, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, malformed limbs, fused fingers, still picture, "
    "cluttered background, three legs, many people in the background, walking backwards"
)
CROP_NOTE = "If the input image does not match the chosen aspect ratio, it is resized and center cropped."


class WanInputBase(FalInput):
    """The fields that fal's Wan 2.1 image-to-video and first-last-frame endpoints share."""

    prompt: str = Field(..., description="The text prompt to guide video generation.")
    negative_prompt: str = Field(WAN_DEFAULT_NEGATIVE_PROMPT, description="Negative prompt for video generation.")
    num_frames: int = Field(
        81,
        ge=81,
        le=100,
        description="Number of frames to generate. Must be between 81 to 100 (inclusive). If the number of frames "
        "is greater than 81, the video will be generated with 1.25x more billing units.",
    )
    frames_per_second: int = Field(
        16, ge=5, le=24, description="Frames per second of the generated video. Must be between 5 to 24."
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed for reproducibility. If None, a random seed is chosen."
    )
    resolution: Literal["480p", "720p"] = Field(
        "720p",
        description="Resolution of the generated video (480p or 720p). 480p is 0.5 billing units, and 720p is 1 "
        "billing unit.",
    )
    num_inference_steps: int = Field(
        30,
        ge=1,
        le=100,
        description="Number of inference steps for sampling. Higher values give better quality but take longer.",
    )
    guide_scale: float = Field(
        5,
        ge=0,
        le=20,
        description="Classifier-free guidance scale. Higher values give better adherence to the prompt but may "
        "decrease quality.",
    )
    shift: float = Field(5, gt=0, le=20, description="Shift parameter for video generation.")
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
    enable_prompt_expansion: bool = Field(False, description="Whether to enable prompt expansion.")
    acceleration: Literal["none", "regular"] = Field(
        "regular",
        description="Acceleration level to use. The more acceleration, the faster the generation, but with lower "
        "quality. The recommended value is 'regular'.",
    )
    aspect_ratio: Literal["auto", "16:9", "9:16", "1:1"] = Field(
        "auto",
        description="Aspect ratio of the generated video. If 'auto', the aspect ratio will be determined "
        "automatically based on the input image.",
    )


class WanI2VInput(WanInputBase):
    image_url: str = Field(..., description=f"URL of the input image. {CROP_NOTE}")


class WanFLF2VInput(WanInputBase):
    start_image_url: str = Field(..., description=f"URL of the starting image. {CROP_NOTE}")
    end_image_url: str = Field(..., description=f"URL of the ending image. {CROP_NOTE}")


class WanI2VOutput(VideoSeedOutput):
    pass


class WanProI2VInput(FalInput):
    prompt: str = Field(..., description="The prompt to generate the video")
    seed: int | None = Field(None, description="Random seed for reproducibility. If None, a random seed is chosen.")
    enable_safety_checker: bool = Field(True, description="Whether to enable the safety checker")
    image_url: str = Field(..., description="The URL of the image to generate the video from")


class WanProI2VOutput(VideoOutput):
    pass
