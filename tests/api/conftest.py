from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from framecast.service.auth import new_api_key
from framecast.store.credentials import SqlCredentialStore
from framecast.store.sql_jobs import SqlJobStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png_uri(width: int = 40, height: int = 30) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def make_api_key(store: SqlJobStore, name: str = "tests") -> str:
    """A real key in the store's database, as `framecast keys create` makes it."""
    made = new_api_key(name, now=time.time())
    SqlCredentialStore(store.database).add_api_key(made.record)
    return made.key


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()
