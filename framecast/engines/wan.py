"""Wan 2.x image-to-video through diffusers' `WanImageToVideoPipeline`.

One engine serves Wan 2.1 I2V, Wan 2.1 FLF2V (first and last frame) and Wan 2.2
A14B (two experts, switched at the pipeline's `boundary_ratio`). Only the worker's
engine process imports this module: it imports torch and diffusers at the top.
"""

from __future__ import annotations

from typing import Any

from framecast.engines.base import (
    EngineError,
    Frames,
    GenerationRequest,
    LogCallback,
    ProgressCallback,
    SectionCallback,
)
from framecast.engines.diffusers_engine import (
    DiffusersEngine,
    RenderInputs,
    StepReporter,
    reraise_cancel,
    scaled_size,
)

__all__ = ["WanImageToVideoEngine", "scaled_size", "valid_num_frames"]


def valid_num_frames(num_frames: int, temporal_factor: int = 4) -> int:
    """The frame count to render: the smallest `temporal_factor`k+1 that is at least `num_frames`.

    diffusers itself rounds down (`n // 4 * 4 + 1`); rounding up and trimming afterwards honours the
    requested count exactly.
    """
    if num_frames % temporal_factor != 1:
        num_frames = (num_frames + temporal_factor - 2) // temporal_factor * temporal_factor + 1
    return max(num_frames, 1)


class WanImageToVideoEngine(DiffusersEngine):
    """Wan 2.1 / 2.2 image-to-video (first frame, optionally last frame) on one device."""

    name = "diffusers-wan-i2v"
    pipeline_class_name = "WanImageToVideoPipeline"

    @staticmethod
    def supports_last_image(pipe: Any) -> bool:
        # Wan 2.1 I2V stacks the first and last CLIP embeddings as a batch of two, which only FLF2V's learned
        # image position embedding folds back into one sequence; Wan 2.2 has no CLIP branch at all.
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        config = transformer.config
        return config.image_dim is None or config.pos_embed_seq_len is not None

    @staticmethod
    def needs_last_image(pipe: Any) -> bool:
        # FLF2V's image position embedding is learned for exactly two CLIP images: one alone fails in its reshape.
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        config = transformer.config
        return config.image_dim is not None and config.pos_embed_seq_len is not None

    def last_image_refusal(self, pipe: Any, request: GenerationRequest) -> str | None:
        if self.supports_last_image(pipe):
            return None
        return (
            "a Wan 2.1 I2V model conditions on one CLIP image; bind a first-last-frame model "
            "(Wan 2.1 FLF2V or Wan 2.2) to this endpoint"
        )

    def render(
        self,
        pipe: Any,
        inputs: RenderInputs,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None,
    ) -> Frames:
        request = inputs.request
        if inputs.last_image is None and self.needs_last_image(pipe):
            raise EngineError(
                f"{self.weights!r} is a Wan 2.1 first-last-frame model and needs a last image, which this request "
                "does not give; send one, or bind a model that takes an optional last frame (Wan 2.2, FramePack)",
                error_type="unprocessable_entity",
                status_code=422,
            )
        num_frames = valid_num_frames(request.num_frames, pipe.vae_scale_factor_temporal)
        if num_frames != request.num_frames:
            log(
                f"num_frames {request.num_frames} is not {pipe.vae_scale_factor_temporal}k+1; "
                f"rendering {num_frames} frames and keeping the first {request.num_frames}"
            )
        extra: dict[str, Any] = {}
        if pipe.transformer_2 is not None:
            # Wan 2.2 A14B: the low-noise expert gets the same guidance unless the plan says otherwise.
            extra["guidance_scale_2"] = request.options.get("guidance_scale_2", request.guidance_scale)
        reporter = StepReporter(on_progress, request.num_inference_steps)
        output = pipe(
            **self.call_arguments(inputs, reporter),
            last_image=inputs.last_image,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_frames=num_frames,
            guidance_scale=request.guidance_scale,
            **extra,
        )
        reraise_cancel(reporter)
        return self.frames_from_output(output.frames)
