from __future__ import annotations

import pytest

from framecast.endpoints.sizing import frames_for_duration, parse_duration_s, video_size
from framecast.endpoints.spec import ImageDimensions


@pytest.mark.parametrize(
    ("resolution", "aspect", "image", "expected"),
    [
        ("480p", "16:9", (10, 10), (832, 480)),
        ("720p", "9:16", (10, 10), (720, 1280)),
        ("720p", "1:1", (10, 10), (960, 960)),
        ("480p", "auto", (1664, 960), (832, 480)),
        ("480p", "auto", (600, 900), (512, 768)),
        ("720p", "auto", (5000, 100), (1472, 624)),
        ("540p", "16:9", (10, 10), (960, 544)),
        ("540p", "9:21", (10, 10), (480, 1104)),
        ("1080p", "16:9", (10, 10), (1920, 1088)),
        ("360p", "4:3", (10, 10), (544, 416)),
    ],
)
def test_video_size(resolution: str, aspect: str, image: tuple[int, int], expected: tuple[int, int]) -> None:
    width, height = video_size(resolution, aspect, ImageDimensions(*image))
    assert (width, height) == expected
    assert width % 16 == 0 and height % 16 == 0


def test_auto_without_an_image_is_landscape() -> None:
    assert video_size("720p", "auto", None) == (1280, 720)


@pytest.mark.parametrize(("duration", "seconds"), [("5s", 5.0), ("5", 5.0), ("10", 10.0), ("9s", 9.0)])
def test_parse_duration(duration: str, seconds: float) -> None:
    assert parse_duration_s(duration) == seconds


def test_frames_for_duration() -> None:
    assert frames_for_duration(5, 24) == 120
    assert frames_for_duration(0.01, 16) == 1
