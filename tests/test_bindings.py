from __future__ import annotations

from pathlib import Path

import pytest

from framecast.bindings import PROFILES, BindingsError, load_bindings_file, profile_path, resolve_bindings
from framecast.endpoints import build_catalogue
from framecast.engines.names import ENGINE_NAMES


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_shipped_profiles_load(profile: str, tmp_path: Path) -> None:
    bindings = resolve_bindings(profile, data_dir=tmp_path)
    assert bindings, "a profile binds at least one endpoint"
    catalogue = build_catalogue()
    for binding in bindings:
        assert binding.endpoint_id in catalogue and binding.engine in ENGINE_NAMES
    assert profile_path(profile).is_file()


def test_tiny_profile_points_into_the_data_dir(tmp_path: Path) -> None:
    (binding,) = resolve_bindings("tiny", data_dir=tmp_path)
    assert binding.weights == str(tmp_path / "models" / "tiny" / "wan21_i2v")
    assert (binding.device, binding.dtype, binding.render_scale) == ("cpu", "float32", 0.125)


def test_a_bindings_file_with_defaults_paths_and_options(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bindings.toml",
        """
[defaults]
device = "cuda:1"
dtype = "float16"

[endpoints."fal-ai/wan-i2v"]
engine = "diffusers-wan-i2v"
weights = "./models/wan"
options = { allow_download = true }
""",
    )
    (binding,) = resolve_bindings(str(path), data_dir=tmp_path / "data", device=None)
    assert binding.weights == str(tmp_path / "models" / "wan")
    assert (binding.device, binding.dtype, binding.options) == ("cuda:1", "float16", {"allow_download": True})
    assert binding.weights_are_local
    (override,) = resolve_bindings(str(path), data_dir=tmp_path, device="cpu")
    assert override.device == "cpu"


def test_repo_ids_stay_repo_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path / "b.toml",
        '[endpoints."fal-ai/wan-i2v"]\nengine = "diffusers-wan-i2v"\n'
        'weights = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"\n',
    )
    (binding,) = load_bindings_file(path, data_dir=tmp_path)
    assert binding.weights == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" and not binding.weights_are_local


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[endpoints."fal-ai/nope"]\nengine = "diffusers-wan-i2v"\nweights = "a/b"\n', "no such endpoint"),
        ('[endpoints."fal-ai/wan-i2v"]\nengine = "comfy"\nweights = "a/b"\n', "unknown engine 'comfy'"),
        ('[endpoints."fal-ai/wan-i2v"]\nengine = "diffusers-wan-i2v"\n', "weights"),
        ('[endpoints."fal-ai/wan-i2v"]\nengine = "diffusers-wan-i2v"\nweights = "a/b"\ndtype = "int8"\n', "int8"),
        ('[endpoints."fal-ai/wan-i2v"]\nengine = "diffusers-wan-i2v"\nweights = "a/b"\ngpu = 1\n', "gpu"),
        ("[endpoints\n", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_with_the_entry_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(BindingsError, match=message) as raised:
        resolve_bindings(str(path), data_dir=tmp_path)
    assert str(path) in str(raised.value)


def test_unknown_profile_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BindingsError, match="neither a built-in profile"):
        resolve_bindings(str(tmp_path / "missing.toml"), data_dir=tmp_path)
