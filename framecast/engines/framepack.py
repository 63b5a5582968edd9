"""FramePack (HunyuanVideo, packed frame context) through diffusers' `HunyuanVideoFramepackPipeline`.

FramePack makes video in sections of `latent_window_size` latent frames (36 video
frames at the default 9), each conditioned on a compressed history of the ones
before. FramePackI2V_HY samples with inverted anti-drifting: it makes the end of
the video first and works back to the input image. F1 samples forwards
("vanilla"). The pipeline decodes each section as it goes; this engine taps
that to publish the video so far after every section (previews), and to keep it
when a job is cancelled.

Only the worker's engine process imports this module: it imports torch and diffusers at the top.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Literal

import torch

from framecast.engines.base import (
    Frames,
    GenerationCancelled,
    GenerationRequest,
    LogCallback,
    ProgressCallback,
    Section,
    SectionCallback,
)
from framecast.engines.diffusers_engine import (
    DTYPES,
    DiffusersEngine,
    RenderInputs,
    StepReporter,
)
from framecast.engines.names import FramePackOptions
from framecast.engines.video import to_uint8_frames

SamplingType = Literal["inverted_anti_drifting", "vanilla"]


def framepack_sections(num_frames: int, latent_window_size: int, temporal_factor: int = 4) -> int:
    """The fewest sections whose output (`sections * latent_window_size * 4 + 1` frames) covers `num_frames`.

    The pipeline itself counts `ceil(num_frames / ((latent_window_size - 1) * 4 + 1))`, which for
    180 frames is 6 sections (217 frames) where 5 (181 frames) suffice.
    """
    frames_per_section = latent_window_size * temporal_factor
    return max(1, math.ceil((num_frames - 1) / frames_per_section))


class SectionTap:
    """Sees each section's decoded video inside the pipeline, without copying its loop.

    The pipeline decodes the first section with `vae.decode` and blends every later one into
    the history with `_soft_append`; both return the whole video so far. The tap wraps the two
    on this pipeline instance for the duration of one call and restores them afterwards.
    `latest` is the video so far as uint8 frames (converted on demand).
    """

    def __init__(
        self,
        pipe: Any,
        *,
        total: int,
        frames_per_second: int,
        placement: Literal["start", "end"],
        on_section: SectionCallback | None,
    ) -> None:
        self.pipe = pipe
        self.total = total
        self.frames_per_second = frames_per_second
        self.placement: Literal["start", "end"] = placement
        self.on_section = on_section
        self.finished = 0
        self._history: torch.Tensor | None = None

    def __enter__(self) -> SectionTap:
        pipe = self.pipe
        decode: Callable[..., Any] = pipe.vae.decode
        soft_append: Callable[..., torch.Tensor] = pipe._soft_append

        def tapped_decode(*args: Any, **kwargs: Any) -> Any:
            output = decode(*args, **kwargs)
            if self.finished == 0:  # later decodes are single sections, blended by _soft_append
                self._finish_section(output[0] if isinstance(output, tuple) else output.sample)
            return output

        def tapped_soft_append(*args: Any, **kwargs: Any) -> torch.Tensor:
            history = soft_append(*args, **kwargs)
            self._finish_section(history)
            return history

        pipe.vae.decode = tapped_decode
        pipe._soft_append = tapped_soft_append
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        del self.pipe.vae.decode
        del self.pipe._soft_append

    def _finish_section(self, history: torch.Tensor) -> None:
        self.finished += 1
        self._history = history
        if self.on_section is not None:
            section = self.latest
            assert section is not None
            self.on_section(section)

    @property
    def latest(self) -> Section | None:
        """The video after the last finished section, or None before the first."""
        if self._history is None:
            return None
        history = self._history
        # As the pipeline's own output: whole 4k+1 frame groups only.
        temporal = self.pipe.vae_scale_factor_temporal
        usable = (history.shape[2] - 1) // temporal * temporal + 1
        video = self.pipe.video_processor.postprocess_video(history[:, :, :usable], output_type="np")
        return Section(
            index=self.finished,
            total=self.total,
            frames=to_uint8_frames(video),
            frames_per_second=self.frames_per_second,
            placement=self.placement,
        )


class FramePackEngine(DiffusersEngine):
    """FramePackI2V_HY (inverted anti-drifting sampling) image-to-video, with an optional last frame.

    Binding options (`FramePackOptions`): `transformer` and `image_encoder` name the FramePack
    transformer and the SigLIP encoder when the pipeline repo lacks them (the real set-up:
    hunyuanvideo-community/HunyuanVideo + lllyasviel/FramePackI2V_HY + lllyasviel/flux_redux_bfl),
    `latent_window_size`, and `previews`.

    Request options: `true_cfg_scale` (> 1 with a negative prompt runs real classifier-free
    guidance; `guidance_scale` is the distilled guidance the model embeds) and
    `last_image_strength` (0..1: how strongly the last image conditions the final section).
    """

    name = "diffusers-framepack"
    pipeline_class_name = "HunyuanVideoFramepackPipeline"
    sampling_type: SamplingType = "inverted_anti_drifting"
    settings: FramePackOptions

    def load_components(self, *, local_only: bool) -> dict[str, Any]:
        components: dict[str, Any] = {}
        dtype = DTYPES[self.dtype]
        if self.settings.transformer:
            from diffusers import HunyuanVideoFramepackTransformer3DModel

            source, local = self.resolve_source(self.settings.transformer)
            components["transformer"] = HunyuanVideoFramepackTransformer3DModel.from_pretrained(  # type: ignore[no-untyped-call]
                source, dtype=dtype, local_files_only=local or local_only
            )
        if self.settings.image_encoder:
            from transformers import SiglipImageProcessor, SiglipVisionModel

            source, local = self.resolve_source(self.settings.image_encoder)
            components["feature_extractor"] = SiglipImageProcessor.from_pretrained(
                source, subfolder="feature_extractor", local_files_only=local or local_only
            )
            components["image_encoder"] = SiglipVisionModel.from_pretrained(
                source, subfolder="image_encoder", dtype=dtype, local_files_only=local or local_only
            )
        return components

    @staticmethod
    def true_cfg_scale(request: GenerationRequest) -> float:
        value = float(request.options.get("true_cfg_scale", 1.0))
        # The pipeline runs the negative pass only with a negative prompt; say what really happens.
        return value if value > 1.0 and request.negative_prompt else 1.0

    def render(
        self,
        pipe: Any,
        inputs: RenderInputs,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None,
    ) -> Frames:
        request = inputs.request
        window = self.settings.latent_window_size
        temporal = pipe.vae_scale_factor_temporal
        sections = framepack_sections(request.num_frames, window, temporal)
        produced = sections * window * temporal + 1
        placement: Literal["start", "end"] = "end" if self.sampling_type == "inverted_anti_drifting" else "start"
        log(
            f"FramePack ({self.sampling_type.replace('_', ' ')}): {sections} sections of {window * temporal} "
            f"frames, {request.num_inference_steps} steps each; {produced} frames, keeping {request.num_frames}"
        )
        true_cfg_scale = self.true_cfg_scale(request)
        if true_cfg_scale != float(request.options.get("true_cfg_scale", 1.0)):
            log("true CFG is off: it needs a negative prompt")
        reporter = StepReporter(on_progress, sections * request.num_inference_steps)
        tap = SectionTap(
            pipe,
            total=sections,
            frames_per_second=request.frames_per_second,
            placement=placement,
            on_section=on_section if self.settings.previews else None,
        )
        try:
            with tap, self.last_image_strength(pipe, inputs, log):
                output = pipe(
                    **self.call_arguments(inputs, reporter),
                    last_image=inputs.last_image,
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt or None,
                    # The pipeline counts sections of (window - 1) * 4 + 1 frames.
                    num_frames=sections * ((window - 1) * temporal + 1),
                    latent_window_size=window,
                    guidance_scale=request.guidance_scale,
                    true_cfg_scale=true_cfg_scale,
                    sampling_type=self.sampling_type,
                )
        except GenerationCancelled as cancelled:
            raise GenerationCancelled(str(cancelled), partial=tap.latest) from cancelled
        if reporter.cancelled is not None:
            raise GenerationCancelled(str(reporter.cancelled), partial=tap.latest)
        return self.frames_from_output(output.frames)

    @contextmanager
    def last_image_strength(self, pipe: Any, inputs: RenderInputs, log: LogCallback) -> Iterator[None]:
        """Scale the last image's latent conditioning by `last_image_strength` (1 = as the pipeline does).

        Without a last image the pipeline conditions on zero latents in that slot, so the strength
        interpolates between no end frame (0) and the full end frame (1). The pipeline encodes the
        first image, then the last one; the wrapper scales the second encoding.
        """
        strength = float(inputs.request.options.get("last_image_strength", 1.0))
        if inputs.last_image is None or strength == 1.0:
            yield
            return
        log(f"last image strength {strength:g}")
        prepare: Callable[..., torch.Tensor] = pipe.prepare_image_latents
        calls = itertools.count()

        def scaled(*args: Any, **kwargs: Any) -> torch.Tensor:
            latents = prepare(*args, **kwargs)
            return latents * strength if next(calls) == 1 else latents

        pipe.prepare_image_latents = scaled
        try:
            yield
        finally:
            del pipe.prepare_image_latents

    @contextmanager
    def cache_contexts(self, pipe: Any, request: GenerationRequest) -> Iterator[None]:
        """The pipeline never opens `cache_context`, which the cache hooks need; open it around each call.

        With true CFG every step calls the transformer twice, conditional first, so the calls
        alternate between the "cond" and "uncond" contexts; each keeps its own cached residuals.
        """
        transformer = pipe.transformer
        inner = transformer.forward
        contexts = ("cond", "uncond") if self.true_cfg_scale(request) > 1.0 else ("cond",)
        calls = itertools.count()

        def forward(*args: Any, **kwargs: Any) -> Any:
            with transformer.cache_context(contexts[next(calls) % len(contexts)]):
                return inner(*args, **kwargs)

        # The cache hooks may have put their own `forward` on the instance; put back whatever was there.
        previous = transformer.__dict__.get("forward")
        transformer.forward = forward
        try:
            yield
        finally:
            if previous is None:
                del transformer.forward
            else:
                transformer.forward = previous


class FramePackF1Engine(FramePackEngine):
    """FramePack F1 (lllyasviel/FramePack_F1_I2V_HY_20250503): forward-only, vanilla sampling."""

    name = "diffusers-framepack-f1"
    sampling_type: SamplingType = "vanilla"

    def last_image_refusal(self, pipe: Any, request: GenerationRequest) -> str | None:
        # diffusers' pipeline raises for a last image with vanilla sampling; say why, and what serves one.
        return "FramePack F1 samples forwards from the first frame; bind diffusers-framepack for a last frame"
