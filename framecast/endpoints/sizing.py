"""Output sizes and frame counts from documented resolution, aspect ratio and duration fields."""

from __future__ import annotations

import math

from framecast.endpoints.spec import ImageDimensions

SIZE_MULTIPLE = 16
# The 16:9 frame of each documented resolution, in multiples of 16 as the video VAEs need
# (480p is Wan's 832x480; 1080p renders 8 rows taller).
LANDSCAPE_SIZES = {
    "360p": (640, 352),
    "480p": (832, 480),
    "540p": (960, 544),
    "576p": (1024, 576),
    "720p": (1280, 720),
    "1080p": (1920, 1088),
}
# Video models train between about 1:2.3 and 2.3:1; a panorama is cropped to that.
MAX_ASPECT = 21 / 9


def round_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, round(value / multiple) * multiple)


def size_for_area(area_pixels: int, aspect: float) -> tuple[int, int]:
    """Width and height (multiples of 16) with about `area_pixels` pixels and width/height ≈ `aspect`."""
    height = math.sqrt(area_pixels / aspect)
    return round_to_multiple(height * aspect), round_to_multiple(height)


def parse_aspect(aspect_ratio: str) -> float:
    """'16:9' -> 1.777...; raises `ValueError` for anything else."""
    width, _, height = aspect_ratio.partition(":")
    return float(width) / float(height)


def image_aspect(image: ImageDimensions) -> float:
    return min(max(image.width / image.height, 1 / MAX_ASPECT), MAX_ASPECT)


# fal's Wan sizes, which differ from the area rule at 480p 1:1 (624x624).
WAN_SIZES = {
    ("480p", "16:9"): (832, 480),
    ("480p", "9:16"): (480, 832),
    ("480p", "1:1"): (624, 624),
    ("720p", "16:9"): (1280, 720),
    ("720p", "9:16"): (720, 1280),
    ("720p", "1:1"): (960, 960),
}


def video_size(resolution: str, aspect_ratio: str, image: ImageDimensions | None) -> tuple[int, int]:
    """Width and height for a resolution ('720p') and an aspect ratio ('16:9', or 'auto' = the image's).

    The pixel count is that of 16:9 at the resolution, so every aspect costs the same.
    The input image is resized and center-cropped to this size by the engine.
    """
    known = WAN_SIZES.get((resolution, aspect_ratio))
    if known is not None:
        return known
    landscape_width, landscape_height = LANDSCAPE_SIZES[resolution]
    area = landscape_width * landscape_height
    if aspect_ratio == "auto":
        aspect = image_aspect(image) if image is not None else 16 / 9
    else:
        aspect = parse_aspect(aspect_ratio)
    return size_for_area(area, aspect)


def frames_for_duration(seconds: float, frames_per_second: int) -> int:
    """Frames for `seconds` of video at `frames_per_second` (engines round up to what they can make, then trim)."""
    return max(1, round(seconds * frames_per_second))


def parse_duration_s(duration: str) -> float:
    """'5s' or '5' -> 5.0."""
    return float(duration.removesuffix("s"))
