"""Build an engine from a binding. Runs inside the engine process only."""

from __future__ import annotations

from dataclasses import replace

from framecast.bindings import ModelBinding
from framecast.engines.base import Engine, EngineError
from framecast.engines.names import ENGINE_OPTIONS, NULL_ENGINE, RELAY_ENGINE, context_parallel_refusal


def build_engine(binding: ModelBinding, *, rank_device: str | None = None) -> Engine:
    """Raises `EngineError` for an engine name this build does not have, or invalid settings.

    A binding with `options.context_parallel` gives the engine that runs each job on all its devices
    (framecast.engines.parallel); with `rank_device`, the single-device engine of one of its ranks.
    The relay is not built here: the API process runs relayed endpoints (framecast.relay).
    """
    if binding.options.get("context_parallel") is not None:
        refusal = context_parallel_refusal(binding.engine)
        if refusal is not None:
            raise EngineError(f"{binding.endpoint_id}: options.context_parallel: {refusal}")
        if rank_device is None:
            from framecast.engines.parallel import ContextParallelEngine

            return ContextParallelEngine(binding)
        binding = replace(binding, device=rank_device)
    if binding.engine == NULL_ENGINE:
        # Before the diffusers engines are imported: the test engine never loads torch.
        from framecast.engines.null import NullEngine

        return NullEngine(weights=binding.weights, device=binding.device)
    from framecast.engines.diffusers_engine import DiffusersEngine
    from framecast.engines.framepack import FramePackEngine, FramePackF1Engine
    from framecast.engines.skyreels import SkyReelsDiffusionForcingEngine
    from framecast.engines.stable_video import StableVideoEngine
    from framecast.engines.wan import WanImageToVideoEngine

    engines: list[type[DiffusersEngine]] = [
        WanImageToVideoEngine,
        FramePackEngine,
        FramePackF1Engine,
        StableVideoEngine,
        SkyReelsDiffusionForcingEngine,
    ]
    by_name = {engine.name: engine for engine in engines}
    engine_class = by_name.get(binding.engine)
    if engine_class is None:
        if binding.engine == RELAY_ENGINE:
            raise EngineError(f"{binding.endpoint_id} is relayed: the API process runs it, not a GPU worker")
        raise EngineError(f"unknown engine {binding.engine!r}; available: {', '.join(ENGINE_OPTIONS)}")
    return engine_class(
        weights=binding.weights,
        device=binding.device,
        dtype=binding.dtype,
        render_scale=binding.render_scale,
        options=binding.options,
    )
