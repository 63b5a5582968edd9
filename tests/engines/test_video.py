from __future__ import annotations

import struct
from pathlib import Path

import av
import numpy as np
import pytest

from framecast.engines.video import encode_mp4, to_uint8_frames


def moving_gradient(frames: int, height: int, width: int) -> np.ndarray:
    """Smooth content, so that an H.264 round trip stays close to the source."""
    y, x = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for i in range(frames):
        video[i, ..., 0] = (x * 255 // max(width - 1, 1) + 2 * i) % 256
        video[i, ..., 1] = y * 255 // max(height - 1, 1)
        video[i, ..., 2] = 128
    return video


def top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    boxes: list[str] = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:  # 64-bit size follows the type
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:  # box runs to the end of the file
            size = len(data) - offset
        assert size >= 8, f"corrupt box at {offset}"
        boxes.append(kind.decode("latin-1"))
        offset += size
    assert offset == len(data), "boxes do not tile the file"
    return boxes


def decode(path: Path) -> tuple[dict[str, object], np.ndarray]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info: dict[str, object] = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": stream.average_rate,
        }
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(stream)])
    return info, frames


def test_round_trip_is_h264_yuv420p_with_exact_frames_size_and_fps(tmp_path: Path) -> None:
    source = moving_gradient(81, 64, 112)
    out = tmp_path / "out.mp4"
    encode_mp4(source, frames_per_second=16, path=out)

    info, decoded = decode(out)
    assert info == {"codec": "h264", "pix_fmt": "yuv420p", "width": 112, "height": 64, "fps": 16}
    assert decoded.shape == (81, 64, 112, 3)
    assert np.abs(decoded.astype(np.int16) - source.astype(np.int16)).mean() < 3.0


def test_moov_atom_precedes_mdat(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode_mp4(moving_gradient(9, 32, 48), frames_per_second=24, path=out)
    boxes = top_level_boxes(out)
    assert boxes[0] == "ftyp"
    assert boxes.index("moov") < boxes.index("mdat")


@pytest.mark.parametrize(("height", "width"), [(63, 111), (64, 111), (63, 112), (1, 1)])
def test_odd_sizes_are_padded_to_even(tmp_path: Path, height: int, width: int) -> None:
    source = moving_gradient(5, height, width)
    out = tmp_path / "odd.mp4"
    encode_mp4(source, frames_per_second=8, path=out)

    info, decoded = decode(out)
    assert (info["height"], info["width"]) == (height + height % 2, width + width % 2)
    assert decoded.shape[0] == 5
    # The source pixels are kept (padding only adds a repeated edge line).
    assert np.abs(decoded[:, :height, :width].astype(np.int16) - source.astype(np.int16)).mean() < 12.0


def test_write_is_atomic_and_replaces_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out.mp4"
    encode_mp4(moving_gradient(3, 16, 16), frames_per_second=8, path=out)
    encode_mp4(moving_gradient(7, 16, 32), frames_per_second=8, path=out)

    _, decoded = decode(out)
    assert decoded.shape == (7, 16, 32, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]  # no temp files left


def test_failed_encode_leaves_existing_file_and_no_temp_files(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    encode_mp4(moving_gradient(3, 16, 16), frames_per_second=8, path=out)
    before = out.read_bytes()

    with pytest.raises(av.error.FFmpegError):
        encode_mp4(moving_gradient(3, 16, 16), frames_per_second=8, path=out, preset="no-such-preset")

    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 16, 16, 3), dtype=np.float32),
        np.zeros((16, 16, 3), dtype=np.uint8),
        np.zeros((2, 16, 16, 4), dtype=np.uint8),
        np.zeros((0, 16, 16, 3), dtype=np.uint8),
    ],
)
def test_encode_rejects_bad_frames(tmp_path: Path, frames: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_mp4(frames, frames_per_second=8, path=tmp_path / "bad.mp4")
    assert not list(tmp_path.iterdir())


def test_encode_rejects_bad_fps_and_crf(tmp_path: Path) -> None:
    frames = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="frames_per_second"):
        encode_mp4(frames, frames_per_second=0, path=tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="crf"):
        encode_mp4(frames, frames_per_second=8, path=tmp_path / "a.mp4", crf=52)


def test_to_uint8_rounds_and_clips() -> None:
    values = np.array([-0.5, 0.0, 0.4 / 255, 0.6 / 255, 127.6 / 255, 1.0, 1.7], dtype=np.float32)
    frames = np.broadcast_to(values[:, None, None, None], (7, 2, 2, 3))
    result = to_uint8_frames(frames)
    assert result.dtype == np.uint8
    assert result.shape == (7, 2, 2, 3)
    assert result[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]
    assert result.flags.c_contiguous


def test_to_uint8_accepts_a_batch_of_one() -> None:
    frames = np.full((1, 3, 4, 5, 3), 0.5, dtype=np.float32)
    result = to_uint8_frames(frames)
    assert result.shape == (3, 4, 5, 3)
    assert int(result[0, 0, 0, 0]) == 128


def test_to_uint8_passes_uint8_through() -> None:
    frames = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    assert np.array_equal(to_uint8_frames(frames), frames)


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 3, 4, 5, 3), dtype=np.float32),  # batch of two
        np.zeros((3, 4, 5), dtype=np.float32),
        np.zeros((3, 4, 5, 4), dtype=np.float32),
        np.full((1, 2, 2, 3), np.nan, dtype=np.float32),
        np.full((1, 2, 2, 3), np.inf, dtype=np.float32),
    ],
)
def test_to_uint8_rejects_bad_input(frames: np.ndarray) -> None:
    with pytest.raises(ValueError):
        to_uint8_frames(frames)
