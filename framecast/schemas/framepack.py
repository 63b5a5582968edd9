"""FramePack: fal-ai/framepack, fal-ai/framepack/f1, fal-ai/framepack/flf2v (seed 000) and
wavespeed-ai/framepack (seed 004)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from framecast.schemas.common import FalInput
from framecast.schemas.files import VideoSeedOutput

# FramePack runs at 30 fps; no documented bound, so this cap (WaveSpeed's, a minute) keeps jobs finite.
MAX_FRAMES = 1800


class FramePackInput(FalInput):
    prompt: str = Field(..., max_length=500, description="Text prompt for video generation (max 500 characters).")
    negative_prompt: str = Field("", description="Negative prompt for video generation.")
    image_url: str = Field(..., description="URL of the image input.")
    seed: int | None = Field(None, description="The seed to use for generating the video.")
    aspect_ratio: Literal["16:9", "9:16"] = Field("16:9", description="The aspect ratio of the video to generate.")
    resolution: Literal["720p", "480p"] = Field(
        "720p",
        description="The resolution of the video to generate. 720p generations cost 1.5x more than 480p generations.",
    )
    cfg_scale: float = Field(1, ge=0, le=7, description="Classifier-Free Guidance scale for the generation.")
    guidance_scale: float = Field(10, ge=0, le=32, description="Guidance scale for the generation.")
    num_frames: int = Field(180, ge=1, le=MAX_FRAMES, description="The number of frames to generate.")
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")


class FramePackFLF2VInput(FramePackInput):
    """`FramePackF2LFRequest` in fal's documentation."""

    num_frames: int = Field(240, ge=1, le=MAX_FRAMES, description="The number of frames to generate.")
    end_image_url: str = Field(..., description="URL of the end image input.")
    strength: float = Field(
        0.8,
        ge=0,
        le=1,
        description="Determines the influence of the final frame on the generated video. Higher values result in "
        "the output being more heavily influenced by the last frame.",
    )


class FramePackOutput(VideoSeedOutput):
    seed: int = Field(..., description="The seed used for generating the video.")


class WaveSpeedFramePackInput(FalInput):
    """WaveSpeed's wavespeed-ai/framepack: the image field is `image`, and -1 asks for a random seed."""

    image: str = Field(..., description="The URL of the video to generate the audio for.")
    prompt: str = Field(..., description="Prompt for generating video.")
    negative_prompt: str = Field("", description="The negative prompt to generate the audio for.")
    aspect_ratio: Literal["16:9", "9:16"] = Field("16:9", description="The aspect ratio of the video to generate.")
    resolution: Literal["720p", "480p"] = Field(
        "720p",
        description="The resolution of the video to generate. 720p generations cost 1.5x more than 480p generations.",
    )
    seed: int = Field(-1, ge=-1, le=2147483647, description="The random seed to use for the generation.")
    num_inference_steps: int = Field(25, ge=4, le=50, description="The number of inference steps to perform.")
    num_frames: int = Field(180, ge=30, le=1800, description="The duration of the audio to generate.")
    guidance_scale: float = Field(10, ge=0, le=32, description="The guidance scale to use for the generation.")
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
