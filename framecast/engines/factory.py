"""Build an engine from a binding. Runs inside the engine process only."""

from __future__ import annotations

from framecast.bindings import ModelBinding
from framecast.engines.base import Engine, EngineError
from framecast.engines.names import ENGINE_NAMES


def build_engine(binding: ModelBinding) -> Engine:
    """Raises `EngineError` for an engine name this build does not have."""
    if binding.engine == "diffusers-wan-i2v":
        from framecast.engines.wan import WanImageToVideoEngine

        return WanImageToVideoEngine(
            weights=binding.weights,
            device=binding.device,
            dtype=binding.dtype,
            render_scale=binding.render_scale,
            options=binding.options,
        )
    raise EngineError(f"unknown engine {binding.engine!r}; available: {', '.join(ENGINE_NAMES)}")
