"""SkyReels-V2 diffusion forcing through diffusers' `SkyReelsV2DiffusionForcingImageToVideoPipeline`.

Diffusion forcing denoises the video in chunks of `base_num_frames`, each chunk
conditioned on the last `overlap_history` frames of the one before, so a video
can be longer than the model's window: the open model closest to MAGI-1's
chunk-by-chunk autoregression that diffusers can run (MAGI-1 itself is not in
diffusers 0.42). Only the worker's engine process imports this module.
"""

from __future__ import annotations

import math
from typing import Any

from framecast.engines.base import Frames, GenerationRequest, LogCallback, ProgressCallback, SectionCallback
from framecast.engines.diffusers_engine import DiffusersEngine, RenderInputs, StepReporter, reraise_cancel
from framecast.engines.names import SkyReelsOptions
from framecast.engines.wan import valid_num_frames

# The upstream recommendation for asynchronous (ar_step > 0) generation.
ASYNC_CAUSAL_BLOCK_SIZE = 5


def register_cache_block() -> None:
    """diffusers' cache hooks do not know SkyReels' block; it has Wan's signature, so give it Wan's metadata."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_skyreels_v2 import SkyReelsV2TransformerBlock

    try:
        TransformerBlockRegistry.get(SkyReelsV2TransformerBlock)
    except ValueError:
        TransformerBlockRegistry.register(
            model_class=SkyReelsV2TransformerBlock,
            # Its blocks return only hidden states; diffusers' annotation says int but its own Wan entry passes None.
            metadata=TransformerBlockMetadata(
                return_hidden_states_index=0,
                return_encoder_hidden_states_index=None,  # type: ignore[arg-type]
            ),
        )


def chunk_plan(
    num_frames: int, base_num_frames: int, overlap_history: int, temporal_factor: int = 4
) -> tuple[int, int]:
    """(frames to render, chunks) for at least `num_frames` frames.

    diffusers 0.42's long-video loop fails (IndexError) when the last chunk is shorter than
    the others, so a long video is rendered as whole chunks of `base_num_frames`, each
    re-using `overlap_history` frames of the one before, and trimmed afterwards. The chunk
    count is the one the pipeline would use anyway. Counts in video frames (4k+1).
    """

    def latent(frames: int) -> int:
        return (frames - 1) // temporal_factor + 1

    if num_frames <= base_num_frames:
        return valid_num_frames(num_frames, temporal_factor), 1
    base, overlap = latent(base_num_frames), latent(overlap_history)
    extra_chunks = math.ceil((latent(num_frames) - base) / (base - overlap))
    render_latents = base + extra_chunks * (base - overlap)
    return (render_latents - 1) * temporal_factor + 1, 1 + extra_chunks


class SkyReelsDiffusionForcingEngine(DiffusersEngine):
    """SkyReels-V2 DF image-to-video; binding options in `SkyReelsOptions`."""

    name = "diffusers-skyreels-df"
    pipeline_class_name = "SkyReelsV2DiffusionForcingImageToVideoPipeline"
    settings: SkyReelsOptions

    def after_load(self, pipe: Any) -> None:
        register_cache_block()

    def last_image_refusal(self, pipe: Any, request: GenerationRequest) -> str | None:
        temporal = pipe.vae_scale_factor_temporal
        base_num_frames = valid_num_frames(self.settings.base_num_frames, temporal)
        _, chunks = chunk_plan(request.num_frames, base_num_frames, self.settings.overlap_history, temporal)
        if chunks == 1:
            return None
        # diffusers 0.42 appends the last frame's one latent as if it were a whole overlap, and the shapes clash.
        return (
            f"diffusers' SkyReels-V2 takes a last image only within one chunk of {base_num_frames} frames, and "
            f"{request.num_frames} frames take {chunks}; ask for fewer frames or bind a first-last-frame model"
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
        settings = self.settings
        temporal = pipe.vae_scale_factor_temporal
        base_num_frames = valid_num_frames(settings.base_num_frames, temporal)
        num_frames, chunks = chunk_plan(request.num_frames, base_num_frames, settings.overlap_history, temporal)
        long_video = chunks > 1
        log(
            f"SkyReels-V2 diffusion forcing: {num_frames} frames in {chunks} chunk(s) of "
            f"{min(base_num_frames, num_frames)}"
            + (f", {settings.overlap_history} frames of overlap" if long_video else "")
            + f"; keeping {request.num_frames}"
        )
        reporter = StepReporter(on_progress, chunks * request.num_inference_steps)
        output = pipe(
            **self.call_arguments(inputs, reporter),
            last_image=inputs.last_image,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            num_frames=num_frames,
            guidance_scale=request.guidance_scale,
            base_num_frames=min(base_num_frames, num_frames),
            overlap_history=settings.overlap_history if long_video else None,
            addnoise_condition=settings.addnoise_condition if long_video else 0,
            ar_step=settings.ar_step,
            causal_block_size=ASYNC_CAUSAL_BLOCK_SIZE if settings.ar_step > 0 else None,
            fps=request.frames_per_second,
        )
        reraise_cancel(reporter)
        return self.frames_from_output(output.frames)
