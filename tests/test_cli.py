from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from framecast.cli import main


def test_serve_help_explains_every_flag_and_the_client_setup() -> None:
    output = subprocess.run(
        [sys.executable, "-m", "framecast", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--ssl-certfile", "--workers", "--models", "--lease-s", "--public-url", "--test-faults"):
        assert flag in output
    assert "FAL_QUEUE_RUN_HOST" in output
    assert "FRAMECAST_WORKERS" in output


def test_invalid_settings_exit_with_a_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framecast", "serve", "--workers", "-1"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "workers" in result.stderr


def test_models_prints_the_catalogue_with_reasons(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--models", "tiny", "--data-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "fal-ai/wan-i2v" in table and "diffusers-wan-i2v" in table and "weights_missing" in table
    assert "fal-ai/veo2/image-to-video" in table and "closed" in table
    assert "framecast dev tiny-models" in table
    assert not (tmp_path / "framecast.db").exists(), "looking does not create a database"


def test_models_json_matches_the_api_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--data-dir", str(tmp_path), "--json"]) == 0
    catalogue = json.loads(capsys.readouterr().out)
    assert catalogue["bindings"].startswith("profile default: ")
    (wan,) = [entry for entry in catalogue["endpoints"] if entry["endpoint_id"] == "fal-ai/wan-i2v"]
    assert (wan["state"], wan["accepting"]) == ("weights_missing", False)
    assert "framecast pull fal-ai/wan-i2v" in wan["reason"]


def serve_with_bindings(tmp_path: Path, bindings_text: str) -> subprocess.CompletedProcess[str]:
    """`framecast serve --models <a bindings file holding bindings_text>`, for bindings it must refuse at start."""
    bindings = tmp_path / "bindings.toml"
    bindings.write_text(bindings_text)
    return subprocess.run(
        [sys.executable, "-m", "framecast", "serve", "--models", str(bindings), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_bindings_file_stops_serve_before_it_starts(tmp_path: Path) -> None:
    result = serve_with_bindings(tmp_path, '[endpoints."fal-ai/wan-i2v"]\nengine = "nope"\nweights = "a/b"\n')
    assert result.returncode == 2
    assert "unknown engine 'nope'" in result.stderr


def test_keys_create_list_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["keys", "create", "--name", "ci", *data]) == 0
    shown = capsys.readouterr().out
    assert "shown only now" in shown and "FAL_KEY=" in shown
    assert main(["keys", "create", "--quiet", *data]) == 0
    quiet_key = capsys.readouterr().out.strip()
    assert quiet_key.startswith("fc_") and ":" in quiet_key and "\n" not in quiet_key
    assert main(["keys", "create", "--name", "ci", *data]) == 1
    assert "exists already" in capsys.readouterr().err

    assert main(["keys", "list", "--json", *data]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["name"] == "ci" and len(listed) == 2
    assert all(entry["revoked_at"] is None for entry in listed)
    assert quiet_key.split(":")[1] not in json.dumps(listed), "secrets are never listed"

    assert main(["keys", "revoke", "ci", *data]) == 0
    assert "Revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "nobody", *data]) == 1
    assert main(["keys", "list", *data]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["KEY_ID", "NAME", "CREATED", "REVOKED"]
    ci_row = next(line for line in table if " ci " in line)
    assert ci_row.rstrip()[-1] == "Z", "the revocation time is shown"


def test_keys_webhook_rotates_and_retires(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = ["--data-dir", str(tmp_path)]
    assert main(["keys", "webhook", *data]) == 0
    first = capsys.readouterr().out
    first_kid = first.splitlines()[0].removeprefix("Signing key: ")
    assert main(["keys", "webhook", "rotate", *data]) == 0
    rotated = capsys.readouterr().out
    second_kid = rotated.splitlines()[0].split()[0]
    assert second_kid != first_kid and f"Signing key: {second_kid}" in rotated
    document = json.loads(rotated[rotated.index("{") :])
    assert [key["kid"] for key in document["keys"]] == [second_kid, first_kid]
    assert main(["keys", "webhook", "retire", first_kid, *data]) == 0
    retired = capsys.readouterr().out
    assert [key["kid"] for key in json.loads(retired[retired.index("{") :])["keys"]] == [second_kid]
    assert main(["keys", "webhook", "retire", "nope", *data]) == 1


def test_worker_refuses_endpoints_it_has_no_binding_for(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framecast", "worker", "--models", "tiny", "--data-dir", str(tmp_path),
         "--endpoints", "fal-ai/wan-i2v,fal-ai/not-there"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--endpoints: not bound here: fal-ai/not-there" in result.stderr


def test_serve_refuses_the_test_engine_without_test_faults(tmp_path: Path) -> None:
    result = serve_with_bindings(tmp_path, '[endpoints."fal-ai/wan-i2v"]\nengine = "test-null"\nweights = "none"\n')
    assert result.returncode == 2
    assert "bound to a test engine (test-null), which serves only with --test-faults" in result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_log_format_is_a_flag_of_serve_and_worker(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from framecast.cli import SERVE_SETTINGS, WORKER_SETTINGS, build_parser, load_settings

    names = SERVE_SETTINGS if command == "serve" else WORKER_SETTINGS
    arguments = build_parser().parse_args([command, "--log-format", "json"])
    assert load_settings(arguments, names).log_format == "json"
    assert load_settings(build_parser().parse_args([command]), names).log_format == "text"
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--log-format", "yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_metrics_public_is_a_serve_flag() -> None:
    from framecast.cli import SERVE_SETTINGS, build_parser, load_settings

    assert load_settings(build_parser().parse_args(["serve", "--metrics-public"]), SERVE_SETTINGS).metrics_public
    assert not load_settings(build_parser().parse_args(["serve"]), SERVE_SETTINGS).metrics_public
