"""Are a binding's weights on this machine? Torch-free, so the API can answer before any worker loads.

Engines load with `local_files_only`, so weights that are not here now will not
appear by themselves: the answer says which command fetches them.
"""

from __future__ import annotations

from pathlib import Path

from framecast.bindings import ModelBinding, is_local_path, weight_sources

# Every diffusers pipeline directory has this index of its components.
PIPELINE_INDEX = "model_index.json"
# The file that proves each kind of weights source is there, relative to the source.
MARKER_FILES = {
    "pipeline": PIPELINE_INDEX,
    "transformer": "config.json",
    "image_encoder": "image_encoder/config.json",
}


def missing_weights_reason(binding: ModelBinding) -> str | None:
    """None when every weights source of the binding is present; otherwise what is missing and how to get it."""
    for role, source in weight_sources(binding).items():
        reason = _missing_source_reason(binding, role, source)
        if reason is not None:
            return reason
    return None


def _missing_source_reason(binding: ModelBinding, role: str, source: str) -> str | None:
    marker = MARKER_FILES.get(role, "config.json")
    what = "diffusers pipeline" if role == "pipeline" else f"{role} weights"
    if is_local_path(source):
        directory = Path(source)
        if (directory / marker).is_file():
            return None
        if binding.render_scale < 1:
            # Only the tiny test models render downscaled.
            hint = f"build the tiny test models with `framecast dev tiny-models {directory.parent}`"
        else:
            hint = f"copy the {what} there or point the binding at one"
        return f"weights missing: {directory} holds no {what} ({marker}); {hint}"
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(source, marker), str):
        return None
    return (
        f"weights missing: {source} ({what}) is not in the Hugging Face cache; "
        f"run `framecast pull {binding.endpoint_id}` on this machine"
    )
