"""What every diffusers engine shares: loading, memory modes, step caching, progress and failures.

A family engine (Wan, FramePack, SVD, SkyReels) subclasses `DiffusersEngine`
and implements `render`: one pipeline call in the family's terms. Everything
around it lives here, so that each family gets the same seed handling, the same
cancel points, the same out-of-memory advice and the same cache switch.

Only the worker's engine process imports this module: it imports torch at the top.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps
from pydantic import ValidationError

from framecast.engines.base import (
    EngineError,
    Frames,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    LogCallback,
    Progress,
    ProgressCallback,
    SectionCallback,
)
from framecast.engines.names import ENGINE_OPTIONS, MEMORY_MODES
from framecast.engines.video import to_uint8_frames

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
FP8_DTYPES: dict[str, torch.dtype] = {
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}

# The VAEs downsample 8x and the transformers patchify 2x2, so sizes must be multiples of 16.
SIZE_MULTIPLE = 16

# torch.cuda.OutOfMemoryError exists in current CPU builds too, but not in every torch we accept.
OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(torch.cuda, "OutOfMemoryError", None), getattr(torch, "OutOfMemoryError", None)) if cls
)

# Wan's `acceleration` levels, as multiples of the binding's `cache_threshold`.
ACCELERATION_FACTORS = {"regular": 1.0, "high": 2.0}


def looks_like_path(weights: str) -> bool:
    # A Hugging Face repo id is exactly "owner/name"; anything anchored or deeper is meant as a directory.
    return weights.startswith(("/", ".", "~")) or weights.count("/") != 1 or "\\" in weights


def scaled_size(width: int, height: int, render_scale: float) -> tuple[int, int]:
    """The render size for `render_scale`: each side scaled, rounded half-up to a multiple of 16, at least 16.

    A scale of 1 returns the size unchanged. Sizes are pixels.
    """
    if render_scale == 1.0:
        return width, height

    def scale(side: int) -> int:
        return max(SIZE_MULTIPLE, math.floor(side * render_scale / SIZE_MULTIPLE + 0.5) * SIZE_MULTIPLE)

    return scale(width), scale(height)


def fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale `image` to cover width x height and crop the overflow around the centre (the endpoint chose the aspect)."""
    return ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class RenderInputs:
    """One request in render terms: sizes already scaled, images already fitted."""

    request: GenerationRequest
    width: int
    height: int
    image: Image.Image
    last_image: Image.Image | None
    generator: torch.Generator


class StepReporter:
    """diffusers' `callback_on_step_end`, counting steps across all of a job's pipeline calls and sections.

    `total_steps` is the job's planned total; it grows if a pipeline runs more steps than
    planned, so `step <= total_steps` always holds. A `GenerationCancelled` raised by
    `on_progress` is remembered, so that it is re-raised even if a pipeline swallowed it.
    """

    def __init__(self, on_progress: ProgressCallback, total_steps: int) -> None:
        self.on_progress = on_progress
        self.total_steps = max(1, total_steps)
        self.steps_done = 0
        self.started = time.monotonic()
        self.cancelled: GenerationCancelled | None = None

    def __call__(self, pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        self.steps_done += 1
        self.total_steps = max(self.total_steps, self.steps_done)
        try:
            self.on_progress(
                Progress(step=self.steps_done, total_steps=self.total_steps, elapsed_s=time.monotonic() - self.started)
            )
        except GenerationCancelled as exc:
            self.cancelled = exc
            raise
        return callback_kwargs


class DiffusersEngine:
    """A diffusers pipeline on one device, with the binding's memory mode and cache settings.

    `weights` is a local diffusers directory (with `model_index.json`) or a Hugging Face repo id
    ("owner/name") whose weights are already in the local Hugging Face cache (`framecast pull`);
    the engine never downloads unless the binding sets `allow_download`. `dtype` is "float32",
    "bfloat16" or "float16". `render_scale` multiplies the render width and height (a test-only
    setting for tiny models, so that documented sizes render in seconds on a CPU); the output
    then has the scaled size. `options` are the engine's binding options (`framecast.engines.names`).

    Not thread-safe: run one `generate` at a time.
    """

    name: ClassVar[str]
    # The diffusers pipeline class, by name (imported at load).
    pipeline_class_name: ClassVar[str]

    def __init__(
        self,
        *,
        weights: str,
        device: str = "cuda",
        dtype: str = "bfloat16",
        render_scale: float = 1.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Check the settings; nothing is loaded until `load`.

        Raises:
            EngineError: an unknown dtype or device, invalid options, or a render_scale that is not a
                positive number.
        """
        if dtype not in DTYPES:
            raise EngineError(f"unknown dtype {dtype!r} for {self.name}; use one of {', '.join(DTYPES)}")
        if not (math.isfinite(render_scale) and render_scale > 0):
            raise EngineError(f"render_scale must be a positive number, got {render_scale!r}")
        try:
            self._device = torch.device(device)
        except RuntimeError as exc:
            raise EngineError(f"unknown torch device {device!r} for {self.name}: {exc}") from exc
        try:
            self.settings = ENGINE_OPTIONS[self.name].model_validate(dict(options or {}))
        except ValidationError as exc:
            raise EngineError(f"invalid options for {self.name}: {exc}") from exc
        self.weights = weights
        self.dtype = dtype
        self.render_scale = render_scale
        self._pipe: Any = None
        self._scheduler: Any = None  # the loaded scheduler; each job gets a fresh copy of it

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers pipeline (for diagnostics and tests). Raises `EngineError` before `load`."""
        if self._pipe is None:
            raise EngineError(f"{self.name}: load() was not called")
        return self._pipe

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Load the pipeline onto the device; a second call does nothing.

        Raises:
            EngineError: the directory is missing or is not a diffusers model, the repo's weights are
                not in the local cache (the message names `framecast pull`), the device is
                unavailable, the memory mode needs a GPU, or the weights do not fit in GPU memory.
        """
        if self._pipe is not None:
            return
        import diffusers

        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(
                f"{self.name} is configured for device {str(self._device)!r} but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); set the binding's device to 'cpu' or install a CUDA build of torch"
            )
        if self.settings.memory in ("model_cpu_offload", "sequential_cpu_offload") and self._device.type == "cpu":
            raise EngineError(
                f"memory = {self.settings.memory!r} moves weights between CPU and a GPU; the binding's device is "
                "'cpu'. Use memory = 'none' on CPU, or a GPU device."
            )
        source, local = self.resolve_source(self.weights)
        pipeline_class = getattr(diffusers, self.pipeline_class_name)
        local_only = local or not self.settings.allow_download
        try:
            components = self.load_components(local_only=local_only)
            pipe = pipeline_class.from_pretrained(
                source,
                dtype=DTYPES[self.dtype],
                # Never start a multi-GB download from inside a worker; `framecast pull` does that.
                local_files_only=local_only,
                **components,
            )
        except (OSError, ValueError) as exc:
            if local:
                raise EngineError(f"could not load the diffusers model in {source}: {exc}") from exc
            raise EngineError(
                f"could not load {self.weights!r} from the local Hugging Face cache; if the weights are not "
                f"downloaded yet, run `framecast pull {self.weights}` to download them, or point the binding at a "
                f"local directory that holds a diffusers model (with model_index.json). Detail: {exc}"
            ) from exc
        try:
            self.place(pipe)
        except OOM_ERRORS as exc:
            raise EngineError(
                f"{self.weights!r} in {self.dtype} does not fit in the memory of {self._device} with "
                f"memory = {self.settings.memory!r}; {self.memory_advice()}"
            ) from exc
        # Progress goes through on_progress; tqdm bars on stderr would only clutter the worker's log.
        pipe.set_progress_bar_config(disable=True)
        self._scheduler = pipe.scheduler
        self._pipe = pipe
        self.after_load(pipe)

    def resolve_source(self, weights: str) -> tuple[str, bool]:
        """(path or repo id, is_local). Raises `EngineError` for a directory that is missing or not a model."""
        path = Path(weights).expanduser()
        if path.is_dir():
            return str(path), True
        if path.exists() or looks_like_path(weights):
            raise EngineError(
                f"model directory {path} does not exist (or is not a directory); point the binding at a local "
                f"diffusers directory, or use a Hugging Face repo id and run `framecast pull <endpoint>`"
            )
        return weights, False

    def load_components(self, *, local_only: bool) -> dict[str, Any]:
        """Components loaded from elsewhere, passed to `from_pretrained` (FramePack's transformer...)."""
        return {}

    def after_load(self, pipe: Any) -> None:
        """A family's one-time set-up after loading (registrations, wrappers)."""

    def denoisers(self, pipe: Any) -> list[Any]:
        """The models that run every step: the ones to cache, offload by group and cast."""
        found = [getattr(pipe, name, None) for name in ("transformer", "transformer_2", "unet")]
        return [model for model in found if model is not None]

    def place(self, pipe: Any) -> None:
        """Put the pipeline on the device under the binding's memory mode, tiling and casting."""
        mode = self.settings.memory
        if self.settings.layerwise_casting != "none":
            for model in self.denoisers(pipe):
                model.enable_layerwise_casting(
                    storage_dtype=FP8_DTYPES[self.settings.layerwise_casting], compute_dtype=DTYPES[self.dtype]
                )
        if mode == "model_cpu_offload":
            pipe.enable_model_cpu_offload(device=self._device)
        elif mode == "sequential_cpu_offload":
            pipe.enable_sequential_cpu_offload(device=self._device)
        elif mode == "group_offload":
            denoisers = self.denoisers(pipe)
            for component in pipe.components.values():
                if isinstance(component, torch.nn.Module) and not any(component is model for model in denoisers):
                    component.to(self._device)
            for model in denoisers:
                # Leaf-level groups with a CUDA stream overlap the transfers with compute.
                model.enable_group_offload(
                    onload_device=self._device,
                    offload_device=torch.device("cpu"),
                    offload_type="leaf_level",
                    use_stream=self._device.type == "cuda",
                )
        else:
            pipe.to(self._device)
        if self.settings.vae_tiling:
            vae = getattr(pipe, "vae", None)
            if vae is None or not hasattr(vae, "enable_tiling"):
                raise EngineError(f"vae_tiling: the VAE of {self.weights!r} cannot decode in tiles")
            vae.enable_tiling()

    def memory_advice(self) -> str:
        """What to try next, from the binding's current settings: the next memory mode, tiling, fp8."""
        settings = self.settings
        ideas = []
        position = MEMORY_MODES.index(settings.memory)
        if position + 1 < len(MEMORY_MODES):
            ideas.append(f'memory = "{MEMORY_MODES[position + 1]}"')
        if not settings.vae_tiling and self.supports_vae_tiling():
            ideas.append("vae_tiling = true")
        if settings.layerwise_casting == "none":
            ideas.append('layerwise_casting = "float8_e4m3fn"')
        suggestion = ", or ".join(ideas) if ideas else "a smaller size, frame count or model"
        return f"try {suggestion} in the binding's options (docs/engines.md#memory-modes)"

    def supports_vae_tiling(self) -> bool:
        vae = getattr(self._pipe, "vae", None)
        return vae is not None and hasattr(vae, "enable_tiling")

    # -- one job ----------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None = None,
    ) -> GenerationResult:
        """Render `request` and return uint8 RGB frames (N, H, W, 3) at the (render-scaled) size.

        `on_progress` is called after every denoising step; a `GenerationCancelled` it raises
        propagates out of this method (with the frames already finished, for engines that make
        video section by section). Exactly `request.num_frames` frames come back: engines render
        the next length their model supports and trim. The same request and seed give the same
        frames on the same device.

        Raises:
            GenerationCancelled: from `on_progress`.
            EngineError: not loaded, an input the model cannot take, out of GPU memory, or the model
                produced NaN/inf values.
        """
        pipe = self.pipeline
        request = self.usable_last_image(pipe, request, log)
        width, height = scaled_size(request.width, request.height, self.render_scale)
        if self.render_scale != 1.0:
            log(
                f"render scale {self.render_scale:g} (test-only setting for tiny models): rendering "
                f"{width}x{height} instead of {request.width}x{request.height}"
            )
        inputs = RenderInputs(
            request=request,
            width=width,
            height=height,
            image=fit_image(request.image, width, height),
            last_image=None if request.last_image is None else fit_image(request.last_image, width, height),
            generator=torch.Generator(device=self._generator_device()).manual_seed(request.seed),
        )
        pipe.scheduler = self.job_scheduler(request.shift, log)
        try:
            with self.step_cache(pipe, request, log):
                frames = self.render(pipe, inputs, on_progress, log, on_section)
        except OOM_ERRORS as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give the next job the memory back
            raise EngineError(
                f"out of GPU memory rendering {width}x{height}, {request.num_frames} frames with {self.weights!r} "
                f"(memory = {self.settings.memory!r}); {self.memory_advice()}"
            ) from exc
        finally:
            pipe.scheduler = self._scheduler
        return GenerationResult(
            frames=frames[: request.num_frames],
            frames_per_second=request.frames_per_second,
            seed=request.seed,
            model=self.weights,
        )

    def render(
        self,
        pipe: Any,
        inputs: RenderInputs,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None,
    ) -> Frames:
        """One job's pipeline call(s); at least `request.num_frames` uint8 frames. Raises as `generate`."""
        raise NotImplementedError

    def last_image_refusal(self, pipe: Any, request: GenerationRequest) -> str | None:
        """Why the loaded model cannot take `request`'s last image, with what to do instead; None when it can."""
        return None

    def usable_last_image(self, pipe: Any, request: GenerationRequest, log: LogCallback) -> GenerationRequest:
        """`request`, without its last image when the model cannot take one and the endpoint allows that.

        A closed endpoint mapped onto this engine names the field of its last image in the
        `last_image_field` option: the last image is then dropped with a WARN naming that field,
        since the request is still answerable. Otherwise the endpoint exists for the last image
        (first-last-frame), and this is a 422.
        """
        if request.last_image is None:
            return request
        refusal = self.last_image_refusal(pipe, request)
        if refusal is None:
            return request
        field_name = request.options.get("last_image_field")
        if field_name is None:
            raise EngineError(
                f"{self.weights!r} cannot take a last_image: {refusal}",
                error_type="unprocessable_entity",
                status_code=422,
            )
        log(f"{field_name} ignored: {self.weights!r} cannot take a last image ({refusal})", "WARN")
        return replace(request, last_image=None)

    @staticmethod
    def call_arguments(inputs: RenderInputs, reporter: StepReporter) -> dict[str, Any]:
        """The pipeline arguments every family passes the same way; `render` adds its own."""
        request = inputs.request
        return {
            "image": inputs.image,
            "height": inputs.height,
            "width": inputs.width,
            "num_inference_steps": request.num_inference_steps,
            "generator": inputs.generator,
            "output_type": "np",
            "callback_on_step_end": reporter,
        }

    def _generator_device(self) -> torch.device:
        # Offloaded pipelines still sample their noise on the execution device.
        return self._device

    def job_scheduler(self, shift: float | None, log: LogCallback) -> Any:
        """A fresh scheduler per job: set_timesteps and step() keep state, and a per-request shift must not leak."""
        base = self._scheduler
        overrides: dict[str, Any] = {}
        if shift is not None:
            if "flow_shift" in base.config:  # UniPC / DPM-Solver with flow sigmas
                overrides["flow_shift"] = float(shift)
            elif "shift" in base.config:  # FlowMatchEulerDiscreteScheduler
                overrides["shift"] = float(shift)
            else:
                log(f"shift={shift} ignored: scheduler {type(base).__name__} has no shift setting")
        return type(base).from_config(base.config, **overrides)

    # -- step caching -----------------------------------------------------------------------------

    def cache_threshold(self, request: GenerationRequest) -> float | None:
        """FirstBlockCache's threshold for this job, or None for no caching.

        The request's `acceleration` ("none", "regular", "high"; Wan) wins; otherwise the
        binding's `cache` option decides.
        """
        acceleration = request.options.get("acceleration")
        if acceleration is None:
            acceleration = "regular" if self.settings.cache == "first_block" else "none"
        factor = ACCELERATION_FACTORS.get(str(acceleration))
        return None if factor is None else self.settings.cache_threshold * factor

    @contextmanager
    def step_cache(self, pipe: Any, request: GenerationRequest, log: LogCallback) -> Iterator[None]:
        """FirstBlockCache on every denoiser for the duration of one job (fresh state per job)."""
        threshold = self.cache_threshold(request)
        if threshold is not None and self.settings.context_parallel is not None:
            # Each rank would judge the first block on its own share of the tokens and skip different steps,
            # leaving the others waiting in the transformer's collectives (diffusers warns of this hang too).
            acceleration = request.options.get("acceleration", self.settings.cache)
            log(f"Step cache off: acceleration {acceleration!r} is not used when a job runs on several devices")
            threshold = None
        if threshold is None:
            yield
            return
        from diffusers import FirstBlockCacheConfig

        denoisers = self.denoisers(pipe)
        for model in denoisers:
            model.enable_cache(FirstBlockCacheConfig(threshold=threshold))  # type: ignore[no-untyped-call]
        log(f"Step cache: FirstBlockCache, threshold {threshold:g}")
        try:
            with self.cache_contexts(pipe, request):
                yield
        finally:
            for model in denoisers:
                model.disable_cache()

    @contextmanager
    def cache_contexts(self, pipe: Any, request: GenerationRequest) -> Iterator[None]:
        """For pipelines that do not open `cache_context` themselves (FramePack): open it around each call."""
        yield

    # -- results ----------------------------------------------------------------------------------

    def frames_from_output(self, frames: Any) -> Frames:
        """uint8 frames from a pipeline's `output_type="np"` video. Raises `EngineError` for NaN/inf."""
        try:
            return to_uint8_frames(np.asarray(frames))
        except ValueError as exc:
            raise EngineError(
                f"{self.weights!r} produced an invalid video ({exc}); with dtype float16 try bfloat16 or float32"
            ) from exc


def reraise_cancel(reporter: StepReporter) -> None:
    """Re-raise a cancellation a pipeline may have swallowed."""
    if reporter.cancelled is not None:
        raise reporter.cancelled
