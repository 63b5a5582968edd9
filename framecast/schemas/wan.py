"""fal-ai/wan-i2v (seed 003 §7, protocol.md §6)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from framecast.schemas.files import EngineMetadata, File

WAN_DEFAULT_NEGATIVE_PROMPT = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, picture, still, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, malformed limbs, fused fingers, still picture, "
    "cluttered background, three legs, many people in the background, walking backwards"
)


class WanI2VInput(BaseModel):
    # fal's apps ignore unknown fields; we keep them to name them in the job's logs.
    model_config = ConfigDict(extra="allow")

    prompt: str = Field(..., description="The text prompt to guide video generation.")
    negative_prompt: str = Field(WAN_DEFAULT_NEGATIVE_PROMPT, description="Negative prompt for video generation.")
    image_url: str = Field(
        ...,
        description="URL of the input image. If the input image does not match the chosen aspect ratio, "
        "it is resized and center cropped.",
    )
    num_frames: int = Field(
        81, ge=81, le=100, description="Number of frames to generate. Must be between 81 to 100 (inclusive)."
    )
    frames_per_second: int = Field(
        16, ge=5, le=24, description="Frames per second of the generated video. Must be between 5 to 24."
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Random seed for reproducibility. If None, a random seed is chosen."
    )
    resolution: Literal["480p", "720p"] = Field("720p", description="Resolution of the generated video.")
    num_inference_steps: int = Field(
        30, ge=1, le=100, description="Number of inference steps for sampling. Higher values give better quality."
    )
    guide_scale: float = Field(5.0, ge=0, le=20, description="Classifier-free guidance scale.")
    shift: float = Field(5.0, gt=0, le=20, description="Shift parameter for video generation.")
    enable_safety_checker: bool = Field(True, description="If set to true, the safety checker will be enabled.")
    enable_prompt_expansion: bool = Field(False, description="Whether to enable prompt expansion.")
    acceleration: Literal["none", "regular"] = Field(
        "regular", description="Acceleration level to use. The recommended value is 'regular'."
    )
    aspect_ratio: Literal["auto", "16:9", "9:16", "1:1"] = Field(
        "auto",
        description="Aspect ratio of the generated video. If 'auto', the aspect ratio will be determined "
        "automatically based on the input image.",
    )


class WanI2VOutput(BaseModel):
    video: File = Field(..., description="The generated video file.")
    seed: int = Field(..., description="The seed used for generation.")
    metadata: EngineMetadata | None = Field(None, description="Framecast: the engine and weights that served it.")
