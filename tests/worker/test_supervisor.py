from __future__ import annotations

from pathlib import Path

import pytest

from framecast.settings import Settings
from framecast.worker.supervisor import settings_environment


def test_settings_round_trip_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMECAST_WORKERS", "7")
    settings = Settings(data_dir=tmp_path, models="tiny", test_faults=True, lease_s=3.5, workers=2)
    environment = settings_environment(settings)
    for key, value in environment.items():
        if key.startswith("FRAMECAST_"):
            monkeypatch.setenv(key, value)
    assert environment["FRAMECAST_WORKERS"] == "2"
    assert "FRAMECAST_DB" not in environment
    assert Settings() == settings
