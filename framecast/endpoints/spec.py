"""What an endpoint is: its schemas, its example, and how its fields become engine terms.

Parameter mapping belongs to the endpoint, not the engine: an endpoint turns its
validated input into a `GenerationPlan` (sizes, frame count, seed...) at submit
time, in the API process, so the seed is fixed once and survives retries. The
plan's `generation` holds the keyword arguments of
`framecast.engines.base.GenerationRequest` (without the images).

A closed endpoint has no engine of its own: the operator maps it onto a local
engine, and its plan is made in that engine's terms (`EngineTraits`: frame rate,
steps, guidance), so `plan_generation` takes the bound engine's name.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from framecast.engines.names import RELAY_ENGINE, EngineTraits, engine_traits

# "open": weights exist and a diffusers engine can serve it; "closed": relayed or mapped (no public weights).
EndpointKind = Literal["open", "closed"]
IMAGE_ROLES = ("image", "last_image")


@dataclass(frozen=True)
class ImageDimensions:
    width: int
    height: int


@dataclass(frozen=True)
class GenerationPlan:
    """Engine-facing parameters and the notes the job's log shows before it runs."""

    generation: dict[str, Any]
    notes: list[str] = field(default_factory=list)


# (validated input, dimensions of each image by input field name, the bound engine's traits) -> plan.
# Open endpoints document their own rates and ignore the traits; closed ones are planned in them.
Planner = Callable[[Any, Mapping[str, ImageDimensions], EngineTraits], GenerationPlan]
# How a job was served, in its result's metadata and in /models: an open endpoint on its engine ("local"), a
# closed endpoint translated onto a local open engine ("mapped"), or forwarded to an upstream server ("relay").
ServedBy = Literal["local", "mapped", "relay"]


@dataclass(frozen=True)
class EndpointSpec:
    endpoint_id: str
    title: str
    kind: EndpointKind
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    # Input field holding an image URL -> the engine's image role ("image" or "last_image").
    image_fields: Mapping[str, str]
    plan: Planner
    # The documentation's example input, accepted as it stands.
    example: Mapping[str, Any]
    # The engine family that serves it when it is bound to local weights.
    engine_family: str
    description: str = ""

    def plan_generation(
        self, request: BaseModel, images: Mapping[str, ImageDimensions], engine: str | None = None
    ) -> GenerationPlan:
        """The endpoint's plan for the bound `engine`, plus what every engine run needs whatever the endpoint.

        `engine` matters to closed endpoints only: their durations become frames at its frame rate, and
        so on (`framecast.engines.names.ENGINE_TRAITS`); unknown or None plans at the closed models' 24 fps.
        `enable_safety_checker` travels to the worker, which runs the configured checker or logs that
        none is configured; it is never reported as checked when it was not.
        """
        planned = self.plan(request, images, engine_traits(engine))
        enabled = getattr(request, "enable_safety_checker", None)
        if enabled is None:
            return planned
        options = {**planned.generation.get("options", {}), "enable_safety_checker": bool(enabled)}
        return GenerationPlan({**planned.generation, "options": options}, planned.notes)

    def served_by(self, engine: str) -> ServedBy:
        """How a job of this endpoint is served when it is bound to `engine`."""
        if engine == RELAY_ENGINE:
            return "relay"
        return "mapped" if self.kind == "closed" else "local"

    @property
    def output_has_seed(self) -> bool:
        """Whether the documented output carries `seed` (otherwise it is only in `metadata`)."""
        return "seed" in self.output_model.model_fields


def random_seed() -> int:
    return secrets.randbelow(2**31)


def choose_seed(seed: int | None) -> int:
    """The request's seed, or a random one when absent or -1 (WaveSpeed's and Seedance's 'random')."""
    return random_seed() if seed is None or seed < 0 else seed


def unknown_field_notes(request: BaseModel) -> list[str]:
    extra = sorted((request.model_extra or {}).keys())
    return [f"Ignored unknown input fields: {', '.join(extra)}"] if extra else []


def unsupported_option_note(name: str, value: Any, consequence: str) -> str:
    """A log line for an option that this server cannot honour: never dropped silently."""
    return f"{name}={value!r}: {consequence}"
