from __future__ import annotations

import base64
import io

import pytest
from PIL import Image


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def png_uri(width: int = 40, height: int = 30) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
