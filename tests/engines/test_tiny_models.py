from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from framecast.engines.tiny_models import FORMAT_VERSION, MARKER_NAME, RECIPES, build_tiny_models


def test_builds_offline_with_marker(tiny_models: dict[str, Path]) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert set(tiny_models) == set(RECIPES) == {"wan21_i2v"}
    path = tiny_models["wan21_i2v"]
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["format"] == FORMAT_VERSION
    assert marker["recipe"] == "wan21_i2v"
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["image_encoder"] == ["transformers", "CLIPVisionModel"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    # Only the published directory is left in the parent: no temp or stale directories.
    assert [p.name for p in path.parent.iterdir()] == ["wan21_i2v"]


def test_second_build_reuses_the_first(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["wan21_i2v"]
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*")}

    again = build_tiny_models(path.parent)

    assert again == tiny_models
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == stamps


def test_from_pretrained_loads_the_real_layout(
    wan_tiny_dir: Path, no_network: Callable[[], AbstractContextManager[None]]
) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    with no_network():
        pipe = WanImageToVideoPipeline.from_pretrained(wan_tiny_dir, dtype=torch.float32)
    config = pipe.transformer.config
    # The size-limiting values stay at the real model's, so documented sizes and frame counts work.
    assert config.rope_max_seq_len == 1024
    assert config.image_dim == pipe.image_encoder.config.hidden_size
    assert config.added_kv_proj_dim == config.num_attention_heads * config.attention_head_dim
    assert config.text_dim == pipe.text_encoder.config.d_model
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.shift == 5.0
    assert pipe.vae_scale_factor_spatial == 8
    assert pipe.vae_scale_factor_temporal == 4
    params = sum(p.numel() for m in (pipe.transformer, pipe.vae, pipe.text_encoder) for p in m.parameters())
    assert params < 1_000_000


def test_incomplete_build_is_replaced_with_identical_weights(
    tmp_path: Path, wan_tiny_dir: Path, no_network: Callable[[], AbstractContextManager[None]]
) -> None:
    stale = tmp_path / "wan21_i2v"
    stale.mkdir()
    (stale / "leftover.txt").write_text("from a crashed build")
    (stale / MARKER_NAME).write_text(json.dumps({"format": FORMAT_VERSION - 1, "recipe": "wan21_i2v"}))

    with no_network():
        built = build_tiny_models(tmp_path)

    path = built["wan21_i2v"]
    assert path == stale
    assert not (path / "leftover.txt").exists()
    assert json.loads((path / MARKER_NAME).read_text())["format"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["wan21_i2v"]
    # Fixed seeds: a rebuild has byte-identical weights.
    for part in ("transformer", "vae", "text_encoder", "image_encoder"):
        (mine,) = (path / part).glob("*.safetensors")
        (theirs,) = (wan_tiny_dir / part).glob("*.safetensors")
        assert mine.read_bytes() == theirs.read_bytes(), part


def test_unknown_recipe_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no-such-model"):
        build_tiny_models(tmp_path, ["no-such-model"])
