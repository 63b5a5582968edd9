from __future__ import annotations

from pathlib import Path

import pytest

from framecast.bindings import (
    PROFILES,
    BindingsError,
    load_bindings_file,
    profile_path,
    resolve_bindings,
    select_bindings,
    weight_sources,
)
from framecast.endpoints import build_catalogue
from framecast.engines.names import ENGINE_NAMES
from framecast.engines.tiny_models import RECIPES


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


def test_tiny_profile_binds_every_endpoint_into_the_data_dir(tmp_path: Path) -> None:
    bindings = {binding.endpoint_id: binding for binding in resolve_bindings("tiny", data_dir=tmp_path)}
    # Open endpoints on their own engines, closed ones mapped onto a local engine (none relayed).
    assert set(bindings) == set(build_catalogue())
    assert not any(binding.is_relay for binding in bindings.values())
    tiny_dir = tmp_path / "models" / "tiny"
    # Every tiny recipe serves some endpoint, and every binding points at a recipe's directory.
    assert {Path(binding.weights) for binding in bindings.values()} == {tiny_dir / name for name in RECIPES}
    wan = bindings["fal-ai/wan-i2v"]
    assert wan.weights == str(tiny_dir / "wan21_i2v")
    assert (wan.device, wan.dtype, wan.render_scale) == ("cpu", "float32", 0.125)
    assert all(binding.device == "cpu" and binding.render_scale < 1 for binding in bindings.values())


def test_default_profile_binds_every_open_endpoint_to_hub_weights(tmp_path: Path) -> None:
    bindings = resolve_bindings("default", data_dir=tmp_path)
    open_endpoints = {endpoint_id for endpoint_id, spec in build_catalogue().items() if spec.kind == "open"}
    assert {binding.endpoint_id for binding in bindings} == open_endpoints
    framepack = next(binding for binding in bindings if binding.endpoint_id == "fal-ai/framepack")
    assert weight_sources(framepack) == {
        "pipeline": "hunyuanvideo-community/HunyuanVideo",
        "transformer": "lllyasviel/FramePackI2V_HY",
        "image_encoder": "lllyasviel/flux_redux_bfl",
    }


def test_engine_options_are_checked_and_weight_options_resolve_like_weights(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bindings.toml",
        """
[endpoints."fal-ai/framepack"]
engine = "diffusers-framepack"
weights = "./hunyuan"
options = { transformer = "${data_dir}/fp", image_encoder = "owner/redux", latent_window_size = 5 }

[endpoints."fal-ai/wan-i2v"]
engine = "diffusers-wan-i2v"
weights = "a/b"
options = { memory = "lots", colour = "red" }
""",
    )
    with pytest.raises(BindingsError) as caught:
        load_bindings_file(path, data_dir=tmp_path / "data", known_engines=set(ENGINE_NAMES))
    message = str(caught.value)
    assert "endpoints.'fal-ai/wan-i2v'.options.memory" in message
    assert "endpoints.'fal-ai/wan-i2v'.options.colour" in message
    assert "fal-ai/framepack" not in message
    path.write_text(path.read_text().split('[endpoints."fal-ai/wan-i2v"]')[0])
    (binding,) = load_bindings_file(path, data_dir=tmp_path / "data", known_engines=set(ENGINE_NAMES))
    assert binding.weights == str(tmp_path / "hunyuan")
    assert binding.options == {
        "transformer": str(tmp_path / "data" / "fp"),
        "image_encoder": "owner/redux",
        "latent_window_size": 5,
    }


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


def test_a_relay_binding_needs_an_upstream_url_and_no_weights(tmp_path: Path) -> None:
    path = write(
        tmp_path / "relay.toml",
        '[endpoints."fal-ai/veo2/image-to-video"]\nengine = "relay"\nweights = "https://queue.fal.run/"\n'
        'options = { key_env = "MY_FAL_KEY", ca_file = "certs/ca.pem" }\n',
    )
    (binding,) = load_bindings_file(path, data_dir=tmp_path, known_engines=set(ENGINE_NAMES))
    assert binding.is_relay and binding.weights == "https://queue.fal.run"
    assert binding.options == {"key_env": "MY_FAL_KEY", "ca_file": str(tmp_path / "certs" / "ca.pem")}
    assert weight_sources(binding) == {}, "nothing to pull or check"

    bad = write(
        tmp_path / "bad.toml",
        '[endpoints."fal-ai/veo2/image-to-video"]\nengine = "relay"\nweights = "queue.fal.run"\n'
        "options = { poll_interval_s = 0 }\n",
    )
    with pytest.raises(BindingsError) as raised:
        load_bindings_file(bad, data_dir=tmp_path, known_engines=set(ENGINE_NAMES))
    assert "a relay's weights is the upstream queue URL" in str(raised.value)
    assert "options.poll_interval_s" in str(raised.value)


def test_a_worker_can_serve_a_subset_of_the_bindings(tmp_path: Path) -> None:
    bindings = resolve_bindings("tiny", data_dir=tmp_path)
    chosen = select_bindings(bindings, " fal-ai/wan-flf2v,fal-ai/wan-i2v ")
    assert [binding.endpoint_id for binding in chosen] == [
        binding.endpoint_id for binding in bindings if binding.endpoint_id in ("fal-ai/wan-i2v", "fal-ai/wan-flf2v")
    ]
    assert select_bindings(bindings, None) == bindings
    with pytest.raises(BindingsError, match=r"--endpoints: not bound here: fal-ai/nope; bound: "):
        select_bindings(bindings, "fal-ai/wan-i2v,fal-ai/nope")
    with pytest.raises(BindingsError, match=r"\(none given\)"):
        select_bindings(bindings, " , ")


def test_the_test_engine_binds_only_when_test_engines_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path / "bench.toml", '[endpoints."fal-ai/wan-i2v"]\nengine = "test-null"\nweights = "none"\n')
    with pytest.raises(BindingsError, match=r"fal-ai/wan-i2v bound to a test engine \(test-null\).*--test-faults"):
        resolve_bindings(str(path), data_dir=tmp_path)
    (binding,) = resolve_bindings(str(path), data_dir=tmp_path, allow_test_engines=True)
    assert binding.engine == "test-null"
    assert weight_sources(binding) == {}, "it loads no weights: nothing to pull or check"
    with pytest.raises(BindingsError, match=r"options\.steps"):
        write(path, path.read_text() + "options = { steps = 1 }\n")
        resolve_bindings(str(path), data_dir=tmp_path, allow_test_engines=True)
