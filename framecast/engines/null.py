"""`test-null`: an engine that does no model work, for benchmarks and tests of the serving path.

It exists so that the cost of serving a job (API, queue, worker, the hop to the engine process and back,
the MP4 encode, completion) can be measured on its own (bench/bench_cog.py compares it with cog's server).
It never imports torch and loads nothing. A bindings file may name it only on a server started with
`--test-faults` (`framecast.bindings.resolve_bindings`), so it cannot serve by accident in production.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from framecast.engines.base import (
    GenerationRequest,
    GenerationResult,
    LogCallback,
    Progress,
    ProgressCallback,
    SectionCallback,
)
from framecast.engines.names import NULL_ENGINE

# The smallest size libx264's yuv420p takes without padding, whatever the request asks for.
NULL_FRAME_SIZE = 16


class NullEngine:
    """Returns `request.num_frames` black 16x16 frames at once, whatever the request's size and image.

    `generate` reports one progress step (1 of 1), so cancellation and the `--test-faults` faults at
    step 1 work as with a real engine; it raises only what that callback raises.
    """

    name: ClassVar[str] = NULL_ENGINE

    def __init__(self, *, weights: str = "", device: str = "cpu") -> None:
        # Kept for the log line the engine process writes after loading; neither is used.
        self.weights = weights
        self.device = device

    def load(self) -> None:
        """Nothing to load."""

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None = None,
    ) -> GenerationResult:
        on_progress(Progress(step=1, total_steps=1, elapsed_s=0.0))
        frames = np.zeros((request.num_frames, NULL_FRAME_SIZE, NULL_FRAME_SIZE, 3), dtype=np.uint8)
        return GenerationResult(
            frames=frames, frames_per_second=request.frames_per_second, seed=request.seed, model=NULL_ENGINE
        )
