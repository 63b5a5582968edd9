"""The contract between a worker's engine process and a model engine.

An engine is loaded once per engine process (`load`) and then runs one
generation at a time (`generate`). It reports progress through a callback,
checks for cancellation between denoising steps, and returns RGB frames.
Everything here is torch-free so that the API process can import the types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

Frames = npt.NDArray[np.uint8]  # (frames, height, width, 3), RGB


class GenerationCancelled(Exception):
    """Raised inside `generate` when the job was cancelled between two steps.

    `partial` holds the frames finished before the cancel (engines that make video section by
    section), or None when nothing was finished.
    """

    def __init__(self, message: str = "cancelled", *, partial: Section | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class EngineError(Exception):
    """A failure the user should see verbatim, with a fal `error_type`.

    `status_code` is the HTTP status the result endpoint answers with.
    """

    def __init__(self, message: str, *, error_type: str = "internal_server_error", status_code: int = 500) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status_code = status_code


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, already in the engine's terms (the endpoint did the mapping).

    Sizes are output pixels; `width` and `height` are multiples of 16.
    """

    image: Image.Image
    prompt: str
    width: int
    height: int
    num_frames: int
    frames_per_second: int
    num_inference_steps: int
    seed: int
    negative_prompt: str = ""
    guidance_scale: float = 5.0
    shift: float | None = None
    last_image: Image.Image | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """One finished denoising step: `step` of `total_steps` (1-based)."""

    step: int
    total_steps: int
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        """Seconds left, extrapolated from the mean step time so far."""
        if self.step <= 0:
            return 0.0
        return self.elapsed_s / self.step * (self.total_steps - self.step)


@dataclass(frozen=True)
class Section:
    """The video so far, after `index` of `total` sections (FramePack makes video section by section).

    `frames` are uint8 RGB (N, H, W, 3) in playback order. `placement` says where they sit
    in the final video: "start" (sections go forwards) or "end" (FramePack's inverted sampling
    makes the end first).
    """

    index: int
    total: int
    frames: Frames
    frames_per_second: int
    placement: Literal["start", "end"]


# Called after every denoising step. It raises `GenerationCancelled` when the job
# was cancelled, so engines stop there without checking anything themselves.
ProgressCallback = Callable[[Progress], None]


class LogCallback(Protocol):
    """A line for the job's log; `level` "WARN" for an input the engine could not honour."""

    def __call__(self, message: str, level: str = "INFO", /) -> None: ...


SectionCallback = Callable[["Section"], None]


@dataclass(frozen=True)
class GenerationResult:
    frames: Frames
    frames_per_second: int
    seed: int
    # What actually served the request, for the result metadata and the logs.
    model: str


class Engine(Protocol):
    """A model engine. Implementations own torch; nothing else does."""

    name: ClassVar[str]

    def load(self) -> None:
        """Load weights once. Raises `EngineError` with a fix-it message when weights are missing."""

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None = None,
    ) -> GenerationResult:
        """Run one generation. Raises `GenerationCancelled` (from `on_progress`) or `EngineError`.

        Engines that make video in sections call `on_section` after each one.
        """
        ...
