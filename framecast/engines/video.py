"""Frame conversion and MP4 (H.264) encoding with PyAV; no torch here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from framecast.engines.base import Frames


def to_uint8_frames(frames: npt.NDArray[Any]) -> Frames:
    """Convert a pipeline's `output_type="np"` video to uint8 RGB frames.

    Accepts floats in [0, 1] shaped (N, H, W, 3), or (1, N, H, W, 3) as diffusers returns a
    batch of one. Values are clipped to [0, 1], scaled to 0..255 and rounded to the nearest
    integer. uint8 input is returned as is (made contiguous).

    Raises:
        ValueError: a batch of more than one video, a shape that is not (N, H, W, 3), or
            NaN/inf values (a model that overflowed, e.g. in float16, must not become a black video).
    """
    array = np.asarray(frames)
    if array.ndim == 5:
        if array.shape[0] != 1:
            raise ValueError(f"expected a batch of one video, got {array.shape[0]} (shape {array.shape})")
        array = array[0]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"expected frames shaped (N, H, W, 3) or (1, N, H, W, 3), got {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.isfinite(array).all():
        raise ValueError("frames contain NaN or infinite values")
    scaled = np.rint(np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0)
    return np.ascontiguousarray(scaled.astype(np.uint8))


def _pad_to_even(frames: Frames) -> Frames:
    # yuv420p subsamples chroma 2x2, so libx264 rejects odd sizes; repeating the edge row/column keeps every
    # source pixel (cropping would drop one) and makes the extra line invisible in practice.
    pad_h = frames.shape[1] % 2
    pad_w = frames.shape[2] % 2
    if not pad_h and not pad_w:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def encode_mp4(frames: Frames, *, frames_per_second: int, path: Path, crf: int = 18, preset: str = "veryfast") -> None:
    """Encode uint8 RGB frames (N, H, W, 3) to an H.264 MP4 at `path`.

    libx264, yuv420p, constant frame rate `frames_per_second` (frames per second), quality
    `crf` (0-51, lower is better), x264 `preset`; `movflags=+faststart` puts the moov atom
    before the media data so that players can start before the download finishes. An odd
    height or width is padded by one pixel (repeating the last row/column) to the even size
    yuv420p needs, so the file is then one pixel larger than the frames. The file is written to
    a temporary file in the same directory and renamed over `path`, so readers never see a
    partial file; on error nothing is left behind.

    Raises:
        ValueError: empty input, a wrong shape or dtype, or fps/crf out of range.
        av.error.FFmpegError (an OSError): the encoder or the file system failed.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames shaped (N, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 1 or frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"no pixels to encode: shape {frames.shape}")
    if frames_per_second < 1:
        raise ValueError(f"frames_per_second must be >= 1, got {frames_per_second}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    even = _pad_to_even(frames)
    height, width = int(even.shape[1]), int(even.shape[2])

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        # The format is named because the temp file's suffix does not say mp4.
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=frames_per_second)
            stream.width = width
            stream.height = height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            for image in even:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):  # flush the encoder's delayed frames
                container.mux(packet)
        # mkstemp creates 0600; the result is served to users like any other output file.
        tmp.chmod(0o644)
        with tmp.open("rb") as written:
            os.fsync(written.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
