"""Engine names and the options each accepts in a binding.

Kept free of torch and numpy, so that the API validates a bindings file (and
`framecast pull` finds every repository a binding needs) without loading a model.
docs/engines.md documents every option.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Memory modes, cheapest first: the out-of-memory error suggests the next one.
MEMORY_MODES = ("none", "model_cpu_offload", "group_offload", "sequential_cpu_offload")
MemoryMode = Literal["none", "model_cpu_offload", "group_offload", "sequential_cpu_offload"]


class EngineOptions(BaseModel):
    """Options every diffusers engine takes (`options = {...}` in a binding)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_download: bool = Field(
        False, description="Let the engine download missing weights at load time (default: only `framecast pull`)."
    )
    memory: MemoryMode = Field(
        "none",
        description="none: everything on the device. model_cpu_offload: one component on the GPU at a time. "
        "group_offload: the denoiser streams its layers from CPU memory. sequential_cpu_offload: every layer "
        "streams (smallest, slowest). The offload modes need a GPU device.",
    )
    vae_tiling: bool = Field(False, description="Decode in tiles to cap the VAE's memory at large sizes.")
    layerwise_casting: Literal["none", "float8_e4m3fn", "float8_e5m2"] = Field(
        "none", description="Store the denoiser's weights in fp8 and compute in the binding's dtype (halves bf16)."
    )
    cache: Literal["none", "first_block"] = Field(
        "none",
        description="Step caching for requests that do not choose (Wan's `acceleration` does): diffusers' "
        "FirstBlockCache reuses the denoiser's output when its first block barely changed.",
    )
    cache_threshold: float = Field(
        0.05,
        gt=0,
        le=1,
        description="FirstBlockCache's relative-change threshold for `regular`; `high` uses twice this. "
        "Higher skips more steps and drifts more.",
    )

    def weight_sources(self) -> dict[str, str]:
        """Extra weights this binding loads besides `weights`: {component: repo id or directory}."""
        return {}


class FramePackOptions(EngineOptions):
    transformer: str | None = Field(
        None,
        description="The FramePack transformer (repo id or directory), e.g. lllyasviel/FramePackI2V_HY; "
        "default: the pipeline's own transformer.",
    )
    image_encoder: str | None = Field(
        None,
        description="Repo id or directory with the SigLIP `image_encoder/` and `feature_extractor/` subfolders, "
        "e.g. lllyasviel/flux_redux_bfl; default: the pipeline's own.",
    )
    latent_window_size: int = Field(9, ge=2, le=33, description="Latent frames per section (9 = 33 video frames).")
    previews: bool = Field(True, description="Publish each finished section as a partial MP4 in the job's logs.")

    def weight_sources(self) -> dict[str, str]:
        sources = {"transformer": self.transformer, "image_encoder": self.image_encoder}
        return {role: source for role, source in sources.items() if source}


class StableVideoOptions(EngineOptions):
    decode_chunk_size: int = Field(8, ge=1, le=64, description="Frames the VAE decodes at once (lower = less memory).")

    @model_validator(mode="after")
    def _no_step_cache(self) -> StableVideoOptions:
        if self.cache != "none":
            raise ValueError("cache: Stable Video Diffusion's UNet has no transformer blocks to cache; use 'none'")
        return self


class SkyReelsOptions(EngineOptions):
    base_num_frames: int = Field(97, ge=9, description="Frames per chunk the model denoises at once (4k+1).")
    overlap_history: int = Field(17, ge=1, description="Frames each chunk re-conditions on from the previous one.")
    ar_step: int = Field(0, ge=0, description="0: synchronous diffusion forcing; 5: asynchronous (slower).")
    addnoise_condition: float = Field(20.0, ge=0, le=60, description="Noise added to the conditioning history.")

    @model_validator(mode="after")
    def _overlap_fits(self) -> SkyReelsOptions:
        if self.overlap_history >= self.base_num_frames:
            raise ValueError("overlap_history must be smaller than base_num_frames")
        return self


ENGINE_OPTIONS: dict[str, type[EngineOptions]] = {
    "diffusers-wan-i2v": EngineOptions,
    "diffusers-framepack": FramePackOptions,
    "diffusers-framepack-f1": FramePackOptions,
    "diffusers-svd": StableVideoOptions,
    "diffusers-skyreels-df": SkyReelsOptions,
}
ENGINE_NAMES = tuple(ENGINE_OPTIONS)
# Option keys that name weights: `${data_dir}` and relative paths resolve in them as in `weights`.
WEIGHT_OPTION_KEYS = ("transformer", "image_encoder")


def parse_engine_options(engine: str, options: dict[str, object]) -> EngineOptions:
    """The validated options of `engine`. Raises `KeyError` (unknown engine) or pydantic's `ValidationError`."""
    return ENGINE_OPTIONS[engine].model_validate(options)
