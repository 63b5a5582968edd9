from __future__ import annotations

from pathlib import Path

import pytest

from framecast.bindings import ModelBinding
from framecast.weights import missing_weights_reason


def test_local_pipeline_directory(tmp_path: Path) -> None:
    binding = ModelBinding("fal-ai/wan-i2v", "diffusers-wan-i2v", str(tmp_path / "wan"))
    reason = missing_weights_reason(binding)
    assert reason is not None and "holds no diffusers pipeline" in reason
    (tmp_path / "wan").mkdir()
    (tmp_path / "wan" / "model_index.json").write_text("{}")
    assert missing_weights_reason(binding) is None


def test_repo_id_is_looked_up_in_the_hugging_face_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binding = ModelBinding("fal-ai/wan-i2v", "diffusers-wan-i2v", "Example-Org/model")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    reason = missing_weights_reason(binding)
    assert reason is not None and "framecast pull fal-ai/wan-i2v" in reason
    # The cache layout huggingface_hub writes: models--owner--name/{refs/main, snapshots/<sha>/...}.
    repo = tmp_path / "models--Example-Org--model"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert missing_weights_reason(binding) is None
