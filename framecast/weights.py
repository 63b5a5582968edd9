"""Are a binding's weights on this machine? Torch-free, so the API can answer before any worker loads.

Engines load with `local_files_only`, so weights that are not here now will not
appear by themselves: the answer says which command fetches them.
"""

from __future__ import annotations

from pathlib import Path

from framecast.bindings import ModelBinding

# Every diffusers pipeline directory has this index of its components.
PIPELINE_INDEX = "model_index.json"


def missing_weights_reason(binding: ModelBinding) -> str | None:
    """None when the weights are present; otherwise what is missing and how to get it."""
    if binding.weights_are_local:
        directory = Path(binding.weights)
        if (directory / PIPELINE_INDEX).is_file():
            return None
        if binding.render_scale < 1:
            # Only the tiny test models render downscaled.
            hint = f"build the tiny test models with `framecast dev tiny-models {directory.parent}`"
        else:
            hint = "copy a diffusers pipeline there or point `weights` at one"
        return f"weights missing: {directory} holds no diffusers pipeline ({PIPELINE_INDEX}); {hint}"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(binding.weights, PIPELINE_INDEX)
    if isinstance(cached, str):
        return None
    return (
        f"weights missing: {binding.weights} is not in the Hugging Face cache; "
        f"run `framecast pull {binding.endpoint_id}` on this machine"
    )
