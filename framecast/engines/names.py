"""Engine names a binding may use. Kept free of torch and numpy so that the API can validate bindings."""

from __future__ import annotations

ENGINE_NAMES = ("diffusers-wan-i2v",)
