"""Stable Video Diffusion (img2vid / img2vid-xt) through diffusers' `StableVideoDiffusionPipeline`.

Only the worker's engine process imports this module: it imports torch and diffusers at the top.
"""

from __future__ import annotations

from typing import Any

from framecast.engines.base import Frames, GenerationRequest, LogCallback, ProgressCallback, SectionCallback
from framecast.engines.diffusers_engine import DiffusersEngine, RenderInputs, StepReporter, reraise_cancel
from framecast.engines.names import StableVideoOptions

# SVD raises guidance linearly across the frames, from this minimum to the request's guidance_scale.
MIN_GUIDANCE_SCALE = 1.0


class StableVideoEngine(DiffusersEngine):
    """SVD image-to-video. SVD takes no prompt; it is conditioned on the image, fps and motion.

    Request options: `motion_bucket_id` (motion amount, 1-255), `noise_aug_strength` (noise
    added to the conditioning image; fal's `cond_aug`) and `conditioning_fps` (the fps the
    model is told; default the output fps). Binding option `decode_chunk_size`: frames
    the VAE decodes at once.
    """

    name = "diffusers-svd"
    pipeline_class_name = "StableVideoDiffusionPipeline"
    settings: StableVideoOptions

    def last_image_refusal(self, pipe: Any, request: GenerationRequest) -> str | None:
        return "Stable Video Diffusion is conditioned on the first frame only; bind a first-last-frame model"

    def render(
        self,
        pipe: Any,
        inputs: RenderInputs,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None,
    ) -> Frames:
        request = inputs.request
        options = request.options
        if request.prompt:
            log("Stable Video Diffusion takes no prompt; it is conditioned on the image only")
        reporter = StepReporter(on_progress, request.num_inference_steps)
        output = pipe(
            **self.call_arguments(inputs, reporter),
            num_frames=request.num_frames,
            min_guidance_scale=MIN_GUIDANCE_SCALE,
            max_guidance_scale=request.guidance_scale,
            fps=int(options.get("conditioning_fps", request.frames_per_second)),
            motion_bucket_id=int(options.get("motion_bucket_id", 127)),
            noise_aug_strength=float(options.get("noise_aug_strength", 0.02)),
            decode_chunk_size=self.settings.decode_chunk_size,
        )
        reraise_cancel(reporter)
        return self.frames_from_output(output.frames)
