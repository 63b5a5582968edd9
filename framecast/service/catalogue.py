"""The catalogue: for every endpoint, what serves it and whether it can take a job now.

State comes from two places. Live workers report each of their bindings
(ready, loading, weights missing, engine error); that is the truth for
endpoints some worker covers, wherever it runs. For the rest, the API's own
bindings say whether the endpoint is bound at all and whether its weights are
on this machine, so a 503 can say exactly what to fix.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from framecast.bindings import ModelBinding, describe_source, resolve_bindings
from framecast.endpoints import EndpointSpec, build_catalogue
from framecast.service.queue import EndpointAvailability
from framecast.settings import Settings
from framecast.store.jobs import JobStore, WorkerRecord
from framecast.weights import missing_weights_reason

EndpointState = Literal["ready", "loading", "no_worker", "weights_missing", "engine_error", "unbound"]
# States in which a job is accepted: some live worker runs, or is loading, the endpoint's engine.
ACCEPTING_STATES = ("ready", "loading")
BINDINGS_DOC = "docs/bindings.md"


@dataclass(frozen=True)
class EndpointStatus:
    endpoint_id: str
    title: str
    kind: str
    engine_family: str
    state: EndpointState
    reason: str | None
    engine: str | None
    model: str | None
    device: str | None
    workers_ready: int
    # How the bound engine serves it: "local", "mapped" (a closed model on a local open engine) or "relay".
    served_by: str | None = None

    @property
    def accepting(self) -> bool:
        return self.state in ACCEPTING_STATES

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "accepting": self.accepting}


def worker_timeout_s(lease_s: float) -> float:
    """A worker whose heartbeat is older than this is presumed gone."""
    return max(lease_s, 5.0)


class CatalogueService:
    def __init__(
        self,
        *,
        catalogue: Mapping[str, EndpointSpec],
        bindings: Sequence[ModelBinding],
        bindings_source: str,
        store: JobStore | None,
        lease_s: float,
    ) -> None:
        self.catalogue = catalogue
        self.bindings = {binding.endpoint_id: binding for binding in bindings}
        self.bindings_source = bindings_source
        self.store = store
        self.lease_s = lease_s

    @classmethod
    def from_settings(
        cls, settings: Settings, *, store: JobStore | None, bindings: Sequence[ModelBinding] | None = None
    ) -> CatalogueService:
        """The catalogue of `settings.models`. Raises `BindingsError` for an unusable bindings file."""
        if bindings is None:
            bindings = resolve_bindings(
                settings.models,
                data_dir=settings.data_dir,
                device=settings.device,
                allow_test_engines=settings.test_faults,
            )
        return cls(
            catalogue=build_catalogue(),
            bindings=bindings,
            bindings_source=describe_source(settings.models),
            store=store,
            lease_s=settings.lease_s,
        )

    def to_json(self) -> dict[str, Any]:
        """What GET /models answers (without URLs). Reads the store (blocking)."""
        return {"bindings": self.bindings_source, "endpoints": [status.to_json() for status in self.statuses()]}

    def live_workers(self) -> list[WorkerRecord]:
        """Workers with a recent heartbeat; none without a job store (`framecast models` before any serve)."""
        if self.store is None:
            return []
        return self.store.list_workers(alive_after=time.time() - worker_timeout_s(self.lease_s))

    def statuses(self) -> list[EndpointStatus]:
        """Every endpoint's status, in catalogue order. Reads the store (blocking)."""
        workers = self.live_workers()
        return [self.describe(spec, workers) for spec in self.catalogue.values()]

    def status(self, endpoint_id: str) -> EndpointStatus:
        """Raises `KeyError` for an endpoint not in the catalogue."""
        return self.describe(self.catalogue[endpoint_id], self.live_workers())

    def availability(self, endpoint_id: str) -> EndpointAvailability:
        """Whether a job for the endpoint would be run (else why not), and by which engine. Reads the store once."""
        status = self.status(endpoint_id)
        return EndpointAvailability(reason=None if status.accepting else status.reason, engine=status.engine)

    def bound_engine(self, endpoint_id: str) -> str | None:
        """The engine the bindings name for the endpoint, without asking the live workers."""
        binding = self.bindings.get(endpoint_id)
        return binding.engine if binding is not None else None

    def describe(self, spec: EndpointSpec, workers: Sequence[WorkerRecord]) -> EndpointStatus:
        endpoint_id = spec.endpoint_id
        binding = self.bindings.get(endpoint_id)
        reports = [(worker, worker.endpoints[endpoint_id]) for worker in workers if endpoint_id in worker.endpoints]
        ready = [report for worker, report in reports if report.state == "ready" and worker.state == "ready"]

        def status(
            state: EndpointState,
            reason: str | None,
            engine: str | None = None,
            model: str | None = None,
            device: str | None = None,
        ) -> EndpointStatus:
            engine = engine or (binding.engine if binding else None)
            return EndpointStatus(
                endpoint_id=endpoint_id,
                title=spec.title,
                kind=spec.kind,
                engine_family=spec.engine_family,
                state=state,
                reason=reason,
                engine=engine,
                model=model or (binding.weights if binding else None),
                device=device or (binding.device if binding else None),
                workers_ready=len(ready),
                served_by=spec.served_by(engine) if engine else None,
            )

        if ready:
            report = ready[0]
            return status("ready", None, report.engine, report.weights, report.device)
        loading = [report for _, report in reports if report.state == "loading"]
        if loading:
            report = loading[0]
            return status("loading", None, report.engine, report.weights, report.device)
        failed = [report for _, report in reports if report.error]
        if failed:
            report = failed[0]
            state: EndpointState = "weights_missing" if report.state == "weights_missing" else "engine_error"
            return status(state, f"{endpoint_id}: {report.error}", report.engine, report.weights, report.device)
        if binding is None:
            return status("unbound", self.unbound_reason(spec))
        if binding.is_relay:
            return status(
                "no_worker",
                f"{endpoint_id}: relayed to {binding.weights} by the API process, and no API process is running; "
                "start `framecast serve`.",
            )
        missing = missing_weights_reason(binding)
        if missing is not None:
            return status("weights_missing", f"{endpoint_id}: {missing}")
        return status(
            "no_worker",
            f"{endpoint_id}: no live worker serves it. Start one with `framecast serve --workers 1` "
            "or `framecast worker`.",
        )

    def unbound_reason(self, spec: EndpointSpec) -> str:
        if spec.kind == "closed":
            how = "a closed model, not bound to an upstream relay or a local engine"
        else:
            how = f"not bound to an engine (it needs a {spec.engine_family} engine)"
        entry = f'[endpoints."{spec.endpoint_id}"]'
        if self.bindings_source.startswith("profile "):
            fix = f"add {entry} to a copy of the built-in {self.bindings_source} and serve with --models COPY.toml"
        else:
            fix = f"add {entry} to {self.bindings_source} and restart"
        return f"{spec.endpoint_id}: {how}. To serve it, {fix} (see {BINDINGS_DOC})."
