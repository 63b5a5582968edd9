from __future__ import annotations

import subprocess
import sys


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
