"""Zero-work cog runners for bench/bench_cog.py; they run in cog's own venv (.venv-cog), not framecast's.

`VideoPredictor` does what framecast's `test-null` engine and its engine process do together: ignore the
input image, make `num_frames` black 16x16 frames and encode them to an H.264 MP4 with the settings of
`framecast.engines.video.encode_mp4` (libx264, yuv420p, crf 18, preset veryfast, +faststart). The MP4 is
the output, which cog returns inline as a data URI. `NonePredictor` returns a short string at once: the
floor of cog's own cycle. Plain defaults rather than `Input(...)`: there is nothing to describe or bound.
`BasePredictor.predict` rather than 0.23's `BaseRunner.run`, so that the same file runs on cog 0.16 (the last
release with the Python server) too; 0.23 logs once at start-up that predict() is deprecated.
"""

from __future__ import annotations

import tempfile

import av
import numpy as np
from cog import BasePredictor, Path

SIZE = 16


class VideoPredictor(BasePredictor):
    def predict(self, image: Path, prompt: str = "", num_frames: int = 81, frames_per_second: int = 16) -> Path:
        path = Path(tempfile.mkdtemp(prefix="cog-bench-")) / "output.mp4"
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=frames_per_second)
            stream.width = SIZE
            stream.height = SIZE
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "veryfast"}
            black = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
            for _ in range(num_frames):
                for packet in stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode(None):  # flush the encoder's delayed frames
                container.mux(packet)
        return path


class NonePredictor(BasePredictor):
    def predict(self, image: Path, prompt: str = "", num_frames: int = 81, frames_per_second: int = 16) -> str:
        return "done"
