"""Engine names and the options each accepts in a binding.

Kept free of torch and numpy, so that the API validates a bindings file (and
`framecast pull` finds every repository a binding needs) without loading a model.
docs/engines.md documents every option.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Memory modes, cheapest first: the out-of-memory error suggests the next one.
MEMORY_MODES = ("none", "model_cpu_offload", "group_offload", "sequential_cpu_offload")
MemoryMode = Literal["none", "model_cpu_offload", "group_offload", "sequential_cpu_offload"]


class BindingOptions(BaseModel):
    """The `options = {...}` of a binding, validated when the bindings file is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def weight_sources(self) -> dict[str, str]:
        """Extra weights this binding loads besides `weights`: {component: repo id or directory}."""
        return {}


# A device of a context-parallel rank: one GPU each, or the CPU (tests).
PARALLEL_DEVICE = re.compile(r"^(cpu|cuda:\d+)$")


class ContextParallelOptions(BaseModel):
    """`options.context_parallel`: one job on several devices (docs/engines.md#several-gpus-for-one-job)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: tuple[str, ...] = Field(
        ...,
        min_length=2,
        description="One device per rank, rank 0 (the engine process) first: 'cuda:0', 'cuda:1'... Ulysses splits "
        "each job's video tokens and attention heads evenly across them. 'cpu' (repeated) runs the ranks on the CPU, "
        "for tests.",
    )

    @field_validator("devices")
    @classmethod
    def _one_gpu_per_rank(cls, devices: tuple[str, ...]) -> tuple[str, ...]:
        malformed = [device for device in devices if not PARALLEL_DEVICE.match(device)]
        if malformed:
            raise ValueError(f"{', '.join(map(repr, malformed))}: name each GPU as 'cuda:N', or use 'cpu'")
        if len({device == "cpu" for device in devices}) > 1:
            raise ValueError("all devices must be GPUs, or all 'cpu'")
        gpus = [device for device in devices if device != "cpu"]
        if len(set(gpus)) != len(gpus):
            raise ValueError("each GPU may appear once: every rank needs a GPU of its own")
        return devices


class EngineOptions(BindingOptions):
    """Options every diffusers engine takes."""

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
    context_parallel: ContextParallelOptions | None = Field(
        None,
        description="Run each job on several devices at once (Ulysses context parallelism; engines whose traits "
        "allow it: Wan). Default: one device, the binding's `device`.",
    )

    @model_validator(mode="after")
    def _context_parallel_alone(self) -> EngineOptions:
        if self.context_parallel is None:
            return self
        if self.memory != "none":
            raise ValueError(
                "context_parallel keeps the whole model on every device; memory must be 'none' (offloading "
                "on several ranks is not supported)"
            )
        if self.cache != "none":
            raise ValueError(
                "cache: each rank would judge its own share of the tokens and skip different steps, leaving the "
                "others waiting; use 'none' with context_parallel"
            )
        return self


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


class RelayOptions(BindingOptions):
    """The relay "engine": the binding's `weights` is the upstream's queue URL (https://queue.fal.run)."""

    key_env: str = Field(
        "FAL_KEY",
        min_length=1,
        description="Environment variable of the server that holds the upstream key (sent as `Key <key>`); "
        "the key itself never goes in a bindings file.",
    )
    endpoint: str | None = Field(None, description="The upstream endpoint id; default: the same id as ours.")
    poll_interval_s: float = Field(1.0, gt=0, le=60, description="Seconds between upstream status polls.")
    ca_file: str | None = Field(
        None, description="A PEM CA bundle to trust for the upstream (a private CA); default: the system's."
    )
    max_output_bytes: int = Field(
        2 * 1024**3, gt=0, description="Largest output file copied from the upstream into our storage."
    )


RELAY_ENGINE = "relay"

ENGINE_OPTIONS: dict[str, type[EngineOptions]] = {
    "diffusers-wan-i2v": EngineOptions,
    "diffusers-framepack": FramePackOptions,
    "diffusers-framepack-f1": FramePackOptions,
    "diffusers-svd": StableVideoOptions,
    "diffusers-skyreels-df": SkyReelsOptions,
}
# Test and benchmark engines (framecast.engines.null): a bindings file may name one only on a server started
# with --test-faults (framecast.bindings.resolve_bindings). They load no weights.
NULL_ENGINE = "test-null"
TEST_ENGINE_OPTIONS: dict[str, type[BindingOptions]] = {NULL_ENGINE: BindingOptions}
# Every engine a binding may name: the diffusers engines (run by GPU workers), the relay (run by the API)
# and the test engines.
BINDING_OPTIONS: dict[str, type[BindingOptions]] = {
    **ENGINE_OPTIONS,
    RELAY_ENGINE: RelayOptions,
    **TEST_ENGINE_OPTIONS,
}
ENGINE_NAMES = tuple(BINDING_OPTIONS)
# Option keys that name weights: `${data_dir}` and relative paths resolve in them as in `weights`.
WEIGHT_OPTION_KEYS = ("transformer", "image_encoder")


def parse_engine_options(engine: str, options: dict[str, object]) -> BindingOptions:
    """The validated options of `engine`. Raises `KeyError` (unknown engine) or pydantic's `ValidationError`."""
    return BINDING_OPTIONS[engine].model_validate(options)


class EngineTraits(BaseModel):
    """What an engine's model makes when a request does not say: the terms a closed endpoint is mapped onto.

    Closed models (Veo, Kling...) have no open weights; an operator may bind their endpoints to a
    local engine, and their fields are then planned at this engine's rates (docs/closed-models.md).
    Per engine, not per weights: every weights an engine loads share these.
    """

    model_config = ConfigDict(frozen=True)

    family: str = Field(..., description="The model family, as log lines name it.")
    frames_per_second: int = Field(
        ..., gt=0, description="The rate the model makes video at: a duration becomes frames at it, and plays at it."
    )
    num_inference_steps: int = Field(..., gt=0, description="Steps for an endpoint that has no steps field.")
    guidance_scale: float = Field(..., ge=1, description="The default guidance: a closed model's default maps to it.")
    takes_prompt: bool = Field(True, description="Whether a text prompt conditions the video.")
    takes_negative_prompt: bool = Field(True, description="Whether a negative prompt does, as the engine is mapped.")
    context_parallel: bool = Field(
        False,
        description="diffusers has a context-parallel plan for the model's transformer, so a binding may run "
        "each job on several devices (`options.context_parallel`).",
    )


FRAMEPACK_TRAITS = EngineTraits(
    family="FramePack",
    frames_per_second=30,  # HunyuanVideo's rate
    num_inference_steps=25,  # per section, as FramePack's demo
    guidance_scale=10.0,  # the distilled (embedded) guidance of FramePack's demo
    # A negative prompt acts only through true CFG, a second pass every step, which a mapping leaves off.
    takes_negative_prompt=False,
)
# Separate from ENGINE_OPTIONS: only the engines that render locally have traits (a relay forwards the input as is).
ENGINE_TRAITS: dict[str, EngineTraits] = {
    # Wan 2.1 (I2V, FLF2V) and Wan 2.2 A14B make 81 frames at 16 fps; 30 steps is fal's Wan default.
    "diffusers-wan-i2v": EngineTraits(
        family="Wan", frames_per_second=16, num_inference_steps=30, guidance_scale=5.0, context_parallel=True
    ),
    "diffusers-framepack": FRAMEPACK_TRAITS,
    "diffusers-framepack-f1": FRAMEPACK_TRAITS,
    # diffusers' default `fps` for SVD is 7: the model is micro-conditioned on fps - 1 = 6, its training rate, so
    # its motion plays right at 7 (the engine conditions on the same value). SVD is conditioned on the image only.
    "diffusers-svd": EngineTraits(
        family="Stable Video Diffusion",
        frames_per_second=7,
        num_inference_steps=25,
        guidance_scale=3.0,  # the maximum of SVD's per-frame guidance ramp
        takes_prompt=False,
        takes_negative_prompt=False,
    ),
    # SkyReels-V2 makes 24 fps video; it is a Wan-architecture model, with Wan's steps and guidance.
    "diffusers-skyreels-df": EngineTraits(
        family="SkyReels-V2", frames_per_second=24, num_inference_steps=30, guidance_scale=5.0
    ),
}
# For a closed endpoint whose engine is not known (or has no traits): the hosted closed models' 24 fps.
CLOSED_MODEL_TRAITS = EngineTraits(
    family="the closed model", frames_per_second=24, num_inference_steps=30, guidance_scale=5.0
)


def engine_traits(engine: str | None) -> EngineTraits:
    """The traits of `engine`, or `CLOSED_MODEL_TRAITS` for None or an engine without traits."""
    return ENGINE_TRAITS.get(engine or "", CLOSED_MODEL_TRAITS)


def context_parallel_refusal(engine: str) -> str | None:
    """Why `engine` cannot run one job on several devices (`options.context_parallel`); None when it can."""
    traits = ENGINE_TRAITS.get(engine)
    if traits is not None and traits.context_parallel:
        return None
    able = ", ".join(name for name, other in ENGINE_TRAITS.items() if other.context_parallel)
    return (
        f"engine {engine!r} cannot run one job on several devices: diffusers has no context-parallel plan for its "
        f"model (engines that can: {able})"
    )
