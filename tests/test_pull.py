"""`framecast pull` resolves what to fetch; the download itself needs the Hub, so tests stop short of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from framecast.bindings import ModelBinding
from framecast.cli import main
from framecast.pull import PullError, PullItem, format_bytes, pull_plan, tree_size

HUB = ModelBinding("fal-ai/wan-i2v", "diffusers-wan-i2v", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")
LOCAL = ModelBinding("fal-ai/wan-flf2v", "diffusers-wan-i2v", "/srv/models/flf2v")


FRAMEPACK = ModelBinding(
    "fal-ai/framepack",
    "diffusers-framepack",
    "hunyuanvideo-community/HunyuanVideo",
    options={"transformer": "lllyasviel/FramePackI2V_HY", "image_encoder": "lllyasviel/flux_redux_bfl"},
)


def test_an_endpoint_pulls_its_bound_repo() -> None:
    assert pull_plan("fal-ai/wan-i2v", [HUB, LOCAL]) == [PullItem("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers")]


def test_a_framepack_binding_pulls_each_component_and_skips_the_replaced_ones() -> None:
    assert pull_plan("fal-ai/framepack", [FRAMEPACK]) == [
        PullItem("hunyuanvideo-community/HunyuanVideo", ignore_patterns=("transformer/*", "image_encoder/*")),
        PullItem("lllyasviel/FramePackI2V_HY"),
        PullItem("lllyasviel/flux_redux_bfl", allow_patterns=("image_encoder/*", "feature_extractor/*")),
    ]


def test_a_repo_id_pulls_itself() -> None:
    assert pull_plan("stabilityai/stable-video-diffusion-img2vid-xt", [HUB]) == [
        PullItem("stabilityai/stable-video-diffusion-img2vid-xt")
    ]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("fal-ai/wan-flf2v", "local directory /srv/models/flf2v"),
        ("fal-ai/veo2/image-to-video", "neither an endpoint bound"),
        ("not a repo", "neither an endpoint bound"),
    ],
)
def test_nothing_to_pull_is_explained(target: str, message: str) -> None:
    with pytest.raises(PullError, match=message):
        pull_plan(target, [HUB, LOCAL])


def test_cli_refuses_an_unbound_endpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pull", "fal-ai/veo2/image-to-video", "--data-dir", str(tmp_path)]) == 2
    assert "neither an endpoint bound" in capsys.readouterr().err


def test_tree_size_follows_cache_symlinks(tmp_path: Path) -> None:
    blob = tmp_path / "blobs" / "abc"
    blob.parent.mkdir()
    blob.write_bytes(b"x" * 2048)
    snapshot = tmp_path / "snapshots" / "1"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").symlink_to(blob)
    assert tree_size(snapshot) == (1, 2048)
    assert format_bytes(2048) == "2.0 KiB"
