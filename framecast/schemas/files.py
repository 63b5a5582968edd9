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
    render_scale: float = Field(1.0, description="Test-only downscale of the rendered size; 1.0 for real serving.")
