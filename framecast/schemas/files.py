from __future__ import annotations

from pydantic import BaseModel, Field


class File(BaseModel):
    """fal's File object. `url` is absolute when served; inside the job store it is a blob reference."""

    url: str = Field(..., description="The URL where the file can be downloaded from.")
    content_type: str | None = Field(None, description="The mime type of the file.")
    file_name: str | None = Field(None, description="The name of the file. It will be auto-generated if not provided.")
    file_size: int | None = Field(None, description="The size of the file in bytes.")


class EngineMetadata(BaseModel):
    """Which engine produced a result. Framecast never hides it."""

    engine: str = Field(..., description="The engine that ran the request, e.g. diffusers-wan-i2v.")
    model: str = Field(..., description="The weights: a Hugging Face repo id or a local directory.")
    seed: int | None = Field(None, description="The seed used, also for endpoints whose output has no seed field.")
    render_scale: float = Field(1.0, description="Test-only downscale of the rendered size; 1.0 for real serving.")


METADATA_DESCRIPTION = "Framecast: the engine and weights that produced this video. Never hidden."


class VideoOutput(BaseModel):
    """Output of the endpoints whose documented result is only a video."""

    video: File = Field(..., description="The generated video")
    metadata: EngineMetadata | None = Field(None, description=METADATA_DESCRIPTION)


class VideoSeedOutput(BaseModel):
    """Output of the endpoints that document the seed next to the video."""

    video: File = Field(..., description="The generated video file.")
    seed: int = Field(..., description="The seed used for generation.")
    metadata: EngineMetadata | None = Field(None, description=METADATA_DESCRIPTION)
