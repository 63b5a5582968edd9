"""Wan 2.x image-to-video through diffusers' `WanImageToVideoPipeline`.

Only the worker's engine process imports this module: it imports torch and diffusers at the top.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from framecast.engines.base import (
    EngineError,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    LogCallback,
    Progress,
    ProgressCallback,
)
from framecast.engines.video import to_uint8_frames

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

# Wan's VAE downsamples 8x and the transformer patchifies 2x2, so sizes must be multiples of 16.
_SIZE_MULTIPLE = 16

# torch.cuda.OutOfMemoryError exists in current CPU builds too, but not in every torch we accept.
_OOM_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(torch.cuda, "OutOfMemoryError", None), getattr(torch, "OutOfMemoryError", None)) if cls
)

_PULL_HINT = "run `framecast pull {weights}` to download them, or point the binding at a local directory"


def _looks_like_path(weights: str) -> bool:
    # A Hugging Face repo id is exactly "owner/name"; anything anchored or deeper is meant as a directory.
    return weights.startswith(("/", ".", "~")) or weights.count("/") != 1 or "\\" in weights


def scaled_size(width: int, height: int, render_scale: float) -> tuple[int, int]:
    """The render size for `render_scale`: each side scaled, rounded half-up to a multiple of 16, at least 16.

    A scale of 1 returns the size unchanged. Sizes are pixels.
    """
    if render_scale == 1.0:
        return width, height

    def scale(side: int) -> int:
        return max(_SIZE_MULTIPLE, math.floor(side * render_scale / _SIZE_MULTIPLE + 0.5) * _SIZE_MULTIPLE)

    return scale(width), scale(height)


def valid_num_frames(num_frames: int, temporal_factor: int = 4) -> int:
    """The frame count to render: the smallest `temporal_factor`k+1 that is at least `num_frames`.

    diffusers itself rounds down (`n // 4 * 4 + 1`); rounding up and trimming afterwards honours the
    requested count exactly.
    """
    if num_frames % temporal_factor != 1:
        num_frames = (num_frames + temporal_factor - 2) // temporal_factor * temporal_factor + 1
    return max(num_frames, 1)


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    # The endpoint already chose the output aspect; scale to cover it and crop the overflow around the centre.
    return ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)


class WanImageToVideoEngine:
    """Wan 2.1 / 2.2 image-to-video (first frame, optionally last frame) on one device.

    `weights` is a local diffusers directory (with `model_index.json`) or a Hugging Face repo id
    ("owner/name") whose weights are already in the local Hugging Face cache (`framecast pull`);
    the engine never downloads unless `options={"allow_download": True}`. `dtype` is "float32",
    "bfloat16" or "float16". `render_scale` multiplies the render width and height (a test-only
    setting for tiny models, so that documented sizes render in seconds on a CPU); the output
    then has the scaled size.

    Not thread-safe: run one `generate` at a time.
    """

    name = "diffusers-wan-i2v"

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
            EngineError: an unknown dtype or device, or a render_scale that is not a positive number.
        """
        if dtype not in _DTYPES:
            raise EngineError(f"unknown dtype {dtype!r} for {self.name}; use one of {', '.join(_DTYPES)}")
        if not (math.isfinite(render_scale) and render_scale > 0):
            raise EngineError(f"render_scale must be a positive number, got {render_scale!r}")
        try:
            self._device = torch.device(device)
        except RuntimeError as exc:
            raise EngineError(f"unknown torch device {device!r} for {self.name}: {exc}") from exc
        self.weights = weights
        self.dtype = dtype
        self.render_scale = render_scale
        self.options: dict[str, Any] = dict(options or {})
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

    def load(self) -> None:
        """Load the pipeline onto the device; a second call does nothing.

        Raises:
            EngineError: the directory is missing or is not a diffusers model, the repo's weights are
                not in the local cache (the message names `framecast pull <repo id>`), the device is
                unavailable, or the weights do not fit in GPU memory.
        """
        if self._pipe is not None:
            return
        from diffusers import WanImageToVideoPipeline

        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(
                f"{self.name} is configured for device {str(self._device)!r} but torch sees no CUDA GPU "
                f"(torch {torch.__version__}); set the binding's device to 'cpu' or install a CUDA build of torch"
            )
        source, local = self._resolve_source()
        try:
            pipe = WanImageToVideoPipeline.from_pretrained(  # type: ignore[no-untyped-call]
                source,
                dtype=_DTYPES[self.dtype],
                # Never start a multi-GB download from inside a worker; `framecast pull` does that.
                local_files_only=local or not self.options.get("allow_download", False),
            )
        except (OSError, ValueError) as exc:
            if local:
                raise EngineError(f"could not load the diffusers model in {source}: {exc}") from exc
            raise EngineError(
                f"could not load {self.weights!r} from the local Hugging Face cache; if the weights are not "
                f"downloaded yet, {_PULL_HINT.format(weights=self.weights)} that holds a diffusers model "
                f"(with model_index.json). Detail: {exc}"
            ) from exc
        try:
            pipe.to(self._device)
        except _OOM_ERRORS as exc:
            raise EngineError(
                f"{self.weights!r} in {self.dtype} does not fit in the memory of {self._device}; "
                "use a memory mode that offloads weights, or a smaller dtype or model"
            ) from exc
        # Progress goes through on_progress; tqdm bars on stderr would only clutter the worker's log.
        pipe.set_progress_bar_config(disable=True)
        self._scheduler = pipe.scheduler
        self._pipe = pipe

    def _resolve_source(self) -> tuple[str, bool]:
        path = Path(self.weights).expanduser()
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise EngineError(
                    f"{path} is not a diffusers model directory (no model_index.json); point the binding at the "
                    f"directory that `save_pretrained` or `framecast pull` wrote"
                )
            return str(path), True
        if path.exists() or _looks_like_path(self.weights):
            raise EngineError(
                f"model directory {path} does not exist (or is not a directory); point the binding at a local "
                f"diffusers directory with model_index.json, or use a Hugging Face repo id and run "
                f"`framecast pull <repo id>`"
            )
        return self.weights, False

    @staticmethod
    def _supports_last_image(pipe: Any) -> bool:
        # Wan 2.1 I2V stacks the first and last CLIP embeddings as a batch of two, which only FLF2V's learned
        # image position embedding folds back into one sequence; Wan 2.2 has no CLIP branch at all.
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        config = transformer.config
        return config.image_dim is None or config.pos_embed_seq_len is not None

    def _job_scheduler(self, shift: float | None, log: LogCallback) -> Any:
        # A fresh scheduler per job: set_timesteps and step() keep state on the scheduler, and a per-request
        # shift must not change the next job's schedule.
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

    def generate(self, request: GenerationRequest, on_progress: ProgressCallback, log: LogCallback) -> GenerationResult:
        """Render `request` and return uint8 RGB frames (N, H, W, 3) at the (render-scaled) size.

        `on_progress` is called after every denoising step with the elapsed seconds since the
        pipeline call started; a `GenerationCancelled` it raises propagates out of this method.
        A frame count that is not 4k+1 is rendered as the next 4k+1 and trimmed, so exactly
        `request.num_frames` frames come back.

        Raises:
            GenerationCancelled: from `on_progress`.
            EngineError: not loaded, a `last_image` for a model without first-last-frame support, out of
                GPU memory, or the model produced NaN/inf values.
        """
        pipe = self.pipeline
        if request.last_image is not None and not self._supports_last_image(pipe):
            raise EngineError(
                f"{self.weights!r} cannot take a last_image: a Wan 2.1 I2V model conditions on one CLIP image; "
                "bind a first-last-frame model (Wan 2.1 FLF2V or Wan 2.2) to this endpoint"
            )
        width, height = scaled_size(request.width, request.height, self.render_scale)
        if self.render_scale != 1.0:
            log(
                f"render scale {self.render_scale:g} (test-only setting for tiny models): rendering "
                f"{width}x{height} instead of {request.width}x{request.height}"
            )
        num_frames = valid_num_frames(request.num_frames, pipe.vae_scale_factor_temporal)
        if num_frames != request.num_frames:
            log(
                f"num_frames {request.num_frames} is not {pipe.vae_scale_factor_temporal}k+1; "
                f"rendering {num_frames} frames and keeping the first {request.num_frames}"
            )
        image = _fit(request.image, width, height)
        last_image = None if request.last_image is None else _fit(request.last_image, width, height)
        generator = torch.Generator(device=self._device).manual_seed(request.seed)

        cancelled: list[GenerationCancelled] = []
        start = time.monotonic()

        def on_step_end(pipeline: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            total = len(pipeline.scheduler.timesteps)
            try:
                on_progress(Progress(step=step + 1, total_steps=total, elapsed_s=time.monotonic() - start))
            except GenerationCancelled as exc:
                # Kept so that the cancellation is re-raised even if a pipeline version catches it.
                cancelled.append(exc)
                raise
            return callback_kwargs

        pipe.scheduler = self._job_scheduler(request.shift, log)
        try:
            output = pipe(
                image=image,
                last_image=last_image,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt,
                height=height,
                width=width,
                num_frames=num_frames,
                num_inference_steps=request.num_inference_steps,
                guidance_scale=request.guidance_scale,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step_end,
            )
        except _OOM_ERRORS as exc:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # give the next job the memory back
            raise EngineError(
                f"out of GPU memory rendering {width}x{height}, {num_frames} frames with {self.weights!r}; "
                "use a memory mode that offloads weights (or tiles the VAE), or a smaller size or frame count"
            ) from exc
        finally:
            pipe.scheduler = self._scheduler
        if cancelled:
            raise cancelled[0]
        try:
            frames = to_uint8_frames(np.asarray(output.frames))[: request.num_frames]
        except ValueError as exc:
            raise EngineError(
                f"{self.weights!r} produced an invalid video ({exc}); with dtype float16 try bfloat16 or float32"
            ) from exc
        return GenerationResult(
            frames=frames, frames_per_second=request.frames_per_second, seed=request.seed, model=self.weights
        )
