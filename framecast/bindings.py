"""Which engine and weights serve each endpoint: the built-in profiles.

A binding is plain data (no torch), shared by the API (for readiness and the
catalogue) and by the worker's engine process (to build the engine).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

TINY_RENDER_SCALE = 1 / 8


@dataclass(frozen=True)
class ModelBinding:
    endpoint_id: str
    engine: str
    weights: str
    device: str = "cuda"
    dtype: str = "bfloat16"
    # Test-only: tiny models render at this fraction of the documented size, and say so.
    render_scale: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


def tiny_models_dir(data_dir: Path) -> Path:
    return data_dir / "models" / "tiny"


def resolve_bindings(profile: str, *, data_dir: Path, device: str | None = None) -> list[ModelBinding]:
    """The bindings of a named profile. Raises `ValueError` for an unknown profile."""
    if profile == "tiny":
        tiny = tiny_models_dir(data_dir)
        bindings = [
            ModelBinding(
                endpoint_id="fal-ai/wan-i2v",
                engine="diffusers-wan-i2v",
                weights=str(tiny / "wan21_i2v"),
                device="cpu",
                dtype="float32",
                render_scale=TINY_RENDER_SCALE,
            ),
        ]
    elif profile == "default":
        bindings = [
            ModelBinding(
                endpoint_id="fal-ai/wan-i2v",
                engine="diffusers-wan-i2v",
                weights="Wan-AI/Wan2.1-I2V-14B-720P-Diffusers",
            ),
        ]
    else:
        raise ValueError(f"unknown model profile {profile!r}: expected 'default' or 'tiny'")
    if device is not None:
        bindings = [replace(binding, device=device) for binding in bindings]
    return bindings
