"""Pluggable output safety checking for `enable_safety_checker`.

Framecast ships no content classifier: which one is right (and licensed) for a
deployment is the operator's call. A checker is any object with a `name` and a
`check(frames, prompt)` method, made by a factory that `--safety-checker
MODULE:FACTORY` names; the engine process imports it once at start. When a
request enables the check and no checker is configured, the job's log says so
in a WARN line: the output is never reported as checked when it was not.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from framecast.engines.base import Frames


@dataclass(frozen=True)
class SafetyVerdict:
    """`flagged`: the output must not be returned. `reason`: shown to the user when flagged."""

    flagged: bool
    reason: str = ""


class SafetyChecker(Protocol):
    name: str

    def check(self, frames: Frames, prompt: str) -> SafetyVerdict:
        """Judge a finished video (uint8 RGB, (N, H, W, 3)) and its prompt. Exceptions fail the job."""
        ...


class SafetyCheckerError(Exception):
    """The configured checker cannot be loaded; the message says why."""


def load_safety_checker(spec: str) -> SafetyChecker:
    """Import `module:factory` and call the factory once. Raises `SafetyCheckerError`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise SafetyCheckerError(f"--safety-checker {spec!r}: expected MODULE:FACTORY, e.g. mypackage.safety:build")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise SafetyCheckerError(f"--safety-checker {spec!r} cannot be imported: {error}") from error
    checker = factory()
    if not callable(getattr(checker, "check", None)):
        raise SafetyCheckerError(f"--safety-checker {spec!r}: {factory!r} returned an object without check()")
    if not isinstance(getattr(checker, "name", None), str):
        raise SafetyCheckerError(f"--safety-checker {spec!r}: the checker has no `name`")
    return checker  # type: ignore[no-any-return]
