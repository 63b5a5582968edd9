"""Which engine and weights serve each endpoint: bindings files and the built-in profiles.

A binding is plain data (no torch), shared by the API (for readiness and the
catalogue) and by the worker's engine process (to build the engine). Bindings
come from a TOML file (docs/bindings.md); `default` and `tiny` are files shipped
in `framecast/profiles/`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framecast.engines.names import (
    BINDING_OPTIONS,
    ENGINE_NAMES,
    ENGINE_OPTIONS,
    RELAY_ENGINE,
    TEST_ENGINE_OPTIONS,
    WEIGHT_OPTION_KEYS,
    ContextParallelOptions,
    context_parallel_refusal,
    parse_engine_options,
)

PROFILES = ("default", "tiny")
DATA_DIR_VARIABLE = "${data_dir}"
# A Hugging Face repo id: "owner/name", each part made of letters, digits, '-', '_' and '.'.
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DTYPES = ("bfloat16", "float16", "float32")


class BindingsError(ValueError):
    """A bindings file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class ModelBinding:
    endpoint_id: str
    engine: str
    weights: str
    device: str = "cuda"
    dtype: str = "bfloat16"
    # Test-only: tiny models render at this fraction of the documented size, and say so.
    render_scale: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_relay(self) -> bool:
        """Relayed to an upstream server (`weights` is its queue URL): run by the API, not a GPU worker."""
        return self.engine == RELAY_ENGINE

    @property
    def weights_are_local(self) -> bool:
        """True for a local directory, False for a Hugging Face repo id."""
        return is_local_path(self.weights)


class BindingEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: str = Field(..., description="Engine name, e.g. diffusers-wan-i2v.")
    weights: str = Field(..., description="Hugging Face repo id (owner/name) or a local directory.")
    device: str | None = Field(None, description="torch device: cuda, cuda:1, cpu.")
    dtype: str | None = Field(None, description="bfloat16, float16 or float32.")
    render_scale: float | None = Field(None, gt=0, le=1, description="Test-only downscale of the output size.")
    options: dict[str, Any] = Field(default_factory=dict, description="Engine options.")


class BindingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: str = "cuda"
    dtype: str = "bfloat16"


class BindingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: BindingDefaults = Field(default_factory=BindingDefaults)
    endpoints: dict[str, BindingEntry] = Field(default_factory=dict)


def is_local_path(weights: str) -> bool:
    return weights.startswith(("/", "./", "../", "~")) or not REPO_ID.match(weights)


def tiny_models_dir(data_dir: Path) -> Path:
    return data_dir / "models" / "tiny"


def profile_path(name: str) -> Path:
    """The shipped TOML of a built-in profile."""
    return Path(str(resources.files("framecast.profiles").joinpath(f"{name}.toml")))


def describe_source(models: str) -> str:
    """Where `--models` bindings come from, for messages: the profile's file or the given file."""
    if models in PROFILES:
        return f"profile {models}: {profile_path(models)}"
    return str(Path(models).expanduser())


def load_bindings_file(
    path: Path,
    *,
    data_dir: Path,
    known_endpoints: set[str] | None = None,
    known_engines: set[str] | None = None,
) -> list[ModelBinding]:
    """Parse a bindings file. Raises `BindingsError` naming the file and every bad entry.

    `${data_dir}` in `weights` becomes the data directory; a relative local path is
    relative to the file's directory; `~` is expanded.
    """
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as error:
        raise BindingsError(f"cannot read bindings file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise BindingsError(f"{path}: not valid TOML: {error}") from None
    try:
        parsed = BindingsFile.model_validate(raw)
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors())
        raise BindingsError(f"{path}: {details}") from None

    problems: list[str] = []
    bindings: list[ModelBinding] = []
    for endpoint_id, entry in parsed.endpoints.items():
        if known_endpoints is not None and endpoint_id not in known_endpoints:
            problems.append(f"endpoints.{endpoint_id!r}: no such endpoint (see `framecast models`)")
        if known_engines is not None and entry.engine not in known_engines:
            problems.append(
                f"endpoints.{endpoint_id!r}.engine: unknown engine {entry.engine!r}; "
                f"available: {', '.join(sorted(known_engines))}"
            )
        dtype = entry.dtype or parsed.defaults.dtype
        if dtype not in DTYPES:
            problems.append(f"endpoints.{endpoint_id!r}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        options = dict(entry.options)
        if entry.engine == RELAY_ENGINE:
            weights = entry.weights.rstrip("/")
            if not weights.startswith(("https://", "http://")):
                problems.append(
                    f"endpoints.{endpoint_id!r}.weights: a relay's weights is the upstream queue URL "
                    f"(e.g. https://queue.fal.run), not {entry.weights!r}"
                )
            if isinstance(options.get("ca_file"), str):
                ca_file = Path(options["ca_file"].replace(DATA_DIR_VARIABLE, str(data_dir))).expanduser()
                options["ca_file"] = str(ca_file if ca_file.is_absolute() else (path.parent / ca_file).resolve())
        else:
            weights = _resolve_weights(entry.weights, data_dir=data_dir, base=path.parent)
        if known_engines is not None and entry.engine in known_engines:
            problems.extend(_option_problems(endpoint_id, entry.engine, options))
        parallel_device, parallel_problems = _context_parallel_device(endpoint_id, entry, options)
        problems.extend(parallel_problems)
        for key in WEIGHT_OPTION_KEYS:
            if isinstance(options.get(key), str):
                options[key] = _resolve_weights(options[key], data_dir=data_dir, base=path.parent)
        bindings.append(
            ModelBinding(
                endpoint_id=endpoint_id,
                engine=entry.engine,
                weights=weights,
                device=parallel_device or entry.device or parsed.defaults.device,
                dtype=dtype,
                render_scale=entry.render_scale or 1.0,
                options=options,
            )
        )
    if problems:
        raise BindingsError(f"{path}: " + "; ".join(problems))
    return bindings


def _resolve_weights(weights: str, *, data_dir: Path, base: Path) -> str:
    """`${data_dir}` substituted; a local path made absolute (relative to `base`, the file's directory)."""
    weights = weights.replace(DATA_DIR_VARIABLE, str(data_dir))
    if is_local_path(weights):
        local = Path(weights).expanduser()
        return str(local if local.is_absolute() else (base / local).resolve())
    return weights


def _context_parallel_device(
    endpoint_id: str, entry: BindingEntry, options: dict[str, Any]
) -> tuple[str | None, list[str]]:
    """The device of rank 0 of a binding with `options.context_parallel` (None without), and its problems.

    Rank 0 runs on the first of `devices`, so that is the binding's device.
    """
    # Other engines (relay, test engines) take no such option and their own validation refuses it.
    if "context_parallel" not in options or entry.engine not in ENGINE_OPTIONS:
        return None, []
    refusal = context_parallel_refusal(entry.engine)
    if refusal is not None:
        return None, [f"endpoints.{endpoint_id!r}.options.context_parallel: {refusal}"]
    try:
        devices = ContextParallelOptions.model_validate(options["context_parallel"]).devices
    except ValidationError:
        return None, []  # _option_problems names what is wrong
    if entry.device is not None and entry.device != devices[0]:
        return None, [
            f"endpoints.{endpoint_id!r}.device: {entry.device!r} is not {devices[0]!r}, the first of "
            "options.context_parallel.devices, where rank 0 runs; leave `device` out"
        ]
    return devices[0], []


def _option_problems(endpoint_id: str, engine: str, options: dict[str, Any]) -> list[str]:
    try:
        parse_engine_options(engine, options)
    except ValidationError as error:
        return [
            f"endpoints.{endpoint_id!r}.options{''.join(f'.{part}' for part in e['loc'])}: {e['msg']}"
            for e in error.errors()
        ]
    return []


def weight_sources(binding: ModelBinding) -> dict[str, str]:
    """Every weights source of `binding`: {"pipeline": weights, component: source...} (repo ids or dirs)."""
    if binding.is_relay or binding.engine in TEST_ENGINE_OPTIONS:
        return {}
    sources = {"pipeline": binding.weights}
    if binding.engine in BINDING_OPTIONS:
        sources.update(parse_engine_options(binding.engine, binding.options).weight_sources())
    return sources


def resolve_bindings(
    models: str, *, data_dir: Path, device: str | None = None, allow_test_engines: bool = False
) -> list[ModelBinding]:
    """The bindings of `models`: a built-in profile name or the path of a bindings file.

    Every endpoint must be in the catalogue and every engine known. `device`
    overrides every binding's device. A test engine (`test-null`) is refused unless
    `allow_test_engines` (the server's `--test-faults`). Raises `BindingsError`.
    """
    from framecast.endpoints import build_catalogue

    path = profile_path(models) if models in PROFILES else Path(models).expanduser()
    if models not in PROFILES and not path.is_file():
        raise BindingsError(
            f"--models {models!r} is neither a built-in profile ({', '.join(PROFILES)}) nor a bindings file"
        )
    bindings = load_bindings_file(
        path, data_dir=data_dir, known_endpoints=set(build_catalogue()), known_engines=set(ENGINE_NAMES)
    )
    test_bound = [binding.endpoint_id for binding in bindings if binding.engine in TEST_ENGINE_OPTIONS]
    if test_bound and not allow_test_engines:
        raise BindingsError(
            f"{path}: {', '.join(test_bound)} bound to a test engine ({', '.join(TEST_ENGINE_OPTIONS)}), "
            "which serves only with --test-faults (tests and benchmarks)"
        )
    if device is not None:
        # A context-parallel binding names every device of its ranks itself.
        bindings = [
            binding if "context_parallel" in binding.options else replace(binding, device=device)
            for binding in bindings
        ]
    return bindings


def select_bindings(bindings: list[ModelBinding], endpoints: str | None) -> list[ModelBinding]:
    """The bindings of the comma-separated `endpoints` (all of them when None), in the file's order.

    Raises `BindingsError` naming every id that no binding has, with the ones that exist.
    """
    if endpoints is None:
        return bindings
    wanted = [endpoint.strip() for endpoint in endpoints.split(",") if endpoint.strip()]
    bound = {binding.endpoint_id for binding in bindings}
    unknown = [endpoint for endpoint in wanted if endpoint not in bound]
    if unknown or not wanted:
        raise BindingsError(
            f"--endpoints: not bound here: {', '.join(unknown) or '(none given)'}; "
            f"bound: {', '.join(sorted(bound)) or '(nothing)'}"
        )
    return [binding for binding in bindings if binding.endpoint_id in wanted]
