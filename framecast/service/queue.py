"""Queue semantics: submit, status, cancel, result. No HTTP types in here.

The routers translate these calls and their exceptions to fal's wire format.
Store calls are synchronous (SQLAlchemy); they run in worker threads so the
event loop keeps serving pollers.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import anyio.to_thread
import pydantic

from framecast.endpoints import EndpointSpec, ImageDimensions
from framecast.inputs.errors import FILE_DOWNLOAD_ERROR, InputError
from framecast.inputs.resolve import ResolvedImage, resolve_image_input
from framecast.inputs.safe_fetch import FetchPolicy
from framecast.logs import bind_request_id
from framecast.store.blobs import BLOB_SCHEME, BlobNotFoundError, BlobStore, InvalidKeyError
from framecast.store.changes import ChangeFeed, PollingChangeFeed
from framecast.store.jobs import (
    CancelOutcome,
    JobEvent,
    JobRecord,
    JobStatus,
    JobStore,
    NewJob,
    Priority,
)

T = TypeVar("T")

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class UnknownEndpointError(Exception):
    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"Endpoint {endpoint_id!r} is not served here")
        self.endpoint_id = endpoint_id


class EndpointUnavailableError(Exception):
    """No live worker can run the endpoint; the message says why and how to fix it."""


class InvalidInputError(Exception):
    """Carries fal/FastAPI-style error entries: [{"loc": [...], "msg": ..., "type": ..., "input": ...}]."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid input field(s)")
        self.errors = errors


class RequestNotFoundError(Exception):
    pass


class RequestNotFinishedError(Exception):
    pass


@dataclass(frozen=True)
class SubmitOptions:
    priority: Priority = Priority.NORMAL
    start_timeout_s: float | None = None
    base_url: str | None = None
    webhook_url: str | None = None
    webhook_format: str = "fal"
    test_fault: str | None = None
    submitted_by: str | None = None


@dataclass(frozen=True)
class StatusView:
    record: JobRecord
    queue_position: int
    logs: list[JobEvent] | None


@dataclass(frozen=True)
class ResultView:
    status_code: int
    body: Any
    headers: dict[str, str]


# Which endpoints some live worker can run, and if not, why: endpoint_id -> reason or None.
EndpointReadiness = Callable[[str], str | None]


@dataclass(frozen=True)
class EndpointAvailability:
    """What submit needs to know of an endpoint, from one look at the live workers."""

    # None when a live worker would run the job; otherwise why not and how to fix it.
    reason: str | None
    # The engine that serves it (what /models shows), or None when unknown: closed endpoints are planned in its terms.
    engine: str | None


EndpointLookup = Callable[[str], EndpointAvailability]


class QueueService:
    def __init__(
        self,
        *,
        store: JobStore,
        blobs: BlobStore,
        catalogue: Mapping[str, EndpointSpec],
        fetch_policy: FetchPolicy,
        max_image_pixels: int,
        max_attempts: int,
        max_status_logs: int,
        availability: EndpointLookup,
        change_feed: ChangeFeed | None = None,
    ) -> None:
        """`change_feed` ends `wait_until_finished`'s polls early when the job has news (PostgreSQL)."""
        self.store = store
        self.change_feed: ChangeFeed = change_feed if change_feed is not None else PollingChangeFeed()
        self.blobs = blobs
        self.catalogue = catalogue
        self.fetch_policy = fetch_policy
        self.max_image_pixels = max_image_pixels
        self.max_attempts = max_attempts
        self.max_status_logs = max_status_logs
        self.availability = availability

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(lambda: function(*args, **kwargs))

    def endpoint(self, endpoint_id: str) -> EndpointSpec:
        """Raises `UnknownEndpointError`."""
        spec = self.catalogue.get(endpoint_id)
        if spec is None:
            raise UnknownEndpointError(endpoint_id)
        return spec

    async def submit(self, endpoint_id: str, raw_input: Any, options: SubmitOptions) -> JobRecord:
        """Validate, fetch and check inputs, store them, and queue the job.

        Raises `UnknownEndpointError`, `EndpointUnavailableError`, or `InvalidInputError`
        (every bad field at once). On any failure nothing is left behind.
        """
        spec = self.endpoint(endpoint_id)
        # Cheap checks first: a bad input is worth a 422 even when the endpoint is down; images come last.
        try:
            request = spec.input_model.model_validate(raw_input)
        except pydantic.ValidationError as error:
            raise InvalidInputError(_fal_errors(error)) from None
        availability = await self._call(self.availability, endpoint_id)
        if availability.reason is not None:
            raise EndpointUnavailableError(availability.reason)

        images = await self._resolve_images(spec, request, base_url=options.base_url)
        request_id = str(uuid.uuid4())
        # The rest of this request's log lines (uvicorn's access line included) name the job it made.
        bind_request_id(request_id)
        plan = spec.plan_generation(
            request,
            {name: ImageDimensions(image.width, image.height) for name, image in images.items()},
            availability.engine,
        )

        stored: list[str] = []
        try:
            image_refs: dict[str, dict[str, str]] = {}
            for field_name, image in images.items():
                key = f"inputs/{request_id}/{field_name}.{EXTENSIONS.get(image.content_type, 'bin')}"
                await self._call(self.blobs.put_bytes, key, image.content, image.content_type)
                stored.append(key)
                image_refs[spec.image_fields[field_name]] = {"key": key, "content_type": image.content_type}
            payload = {
                "input": request.model_dump(mode="json", exclude=set((request.model_extra or {}).keys())),
                "generation": plan.generation,
                "images": image_refs,
                "notes": plan.notes,
                "output_seed": spec.output_has_seed,
            }
            job = NewJob(
                request_id=request_id,
                endpoint_id=endpoint_id,
                payload=payload,
                priority=options.priority,
                start_deadline_at=(time.time() + options.start_timeout_s) if options.start_timeout_s else None,
                base_url=options.base_url,
                webhook_url=options.webhook_url,
                webhook_format=options.webhook_format,
                test_fault=options.test_fault,
                max_attempts=self.max_attempts,
                submitted_by=options.submitted_by,
            )
            return await self._call(self.store.create_job, job)
        except BaseException:
            for key in stored:
                await self._call(self.blobs.delete, key)
            raise

    async def _resolve_images(
        self, spec: EndpointSpec, request: pydantic.BaseModel, *, base_url: str | None
    ) -> dict[str, ResolvedImage]:
        names = [name for name in spec.image_fields if getattr(request, name, None) is not None]
        results = await asyncio.gather(
            *(self._resolve_image(name, getattr(request, name), base_url=base_url) for name in names),
            return_exceptions=True,
        )
        errors: list[dict[str, Any]] = []
        images: dict[str, ResolvedImage] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, InputError):
                errors.append(
                    {
                        "loc": ["body", result.field or name],
                        "msg": result.message,
                        "type": result.error_type,
                        "input": _shorten(getattr(request, name)),
                    }
                )
            elif isinstance(result, BaseException):
                raise result
            else:
                images[name] = result
        if errors:
            raise InvalidInputError(errors)
        return images

    async def _resolve_image(self, name: str, value: str, *, base_url: str | None) -> ResolvedImage:
        content = None
        if base_url is not None:
            content = await self._call(self._own_file, value, base_url=base_url)
        return await resolve_image_input(
            name, value, policy=self.fetch_policy, max_image_pixels=self.max_image_pixels, content=content
        )

    def _own_file(self, url: str, *, base_url: str) -> bytes | None:
        """The bytes behind one of our own file URLs (an upload), or None when `url` is not ours.

        Read from the blob store: a request to ourselves would be refused by the SSRF rules (loopback).
        Raises `InputError` when the URL is ours but names no file (expired, or never there).
        """
        key = self.blobs.key_for_url(url, base_url=base_url)
        if key is None:
            return None
        try:
            return self.blobs.get_bytes(key)
        except (BlobNotFoundError, InvalidKeyError):
            raise InputError(
                "no such file on this server (uploads expire; upload it again)", error_type=FILE_DOWNLOAD_ERROR
            ) from None

    async def find(self, request_id: str) -> JobRecord | None:
        return await self._call(self.store.get_job, request_id)

    async def get(self, request_id: str) -> JobRecord:
        """Raises `RequestNotFoundError`."""
        record = await self.find(request_id)
        if record is None:
            raise RequestNotFoundError(request_id)
        return record

    async def history(self, *, submitted_by: str | None, limit: int) -> list[JobRecord]:
        """The newest jobs of one API key (all jobs when None), newest first."""
        return await self._call(lambda: self.store.list_jobs(submitted_by=submitted_by, limit=limit))

    async def queue_position(self, record: JobRecord) -> int:
        """Requests ahead of `record` (0 unless it is IN_QUEUE)."""
        return await self._call(self.store.queue_position, record) if record.status is JobStatus.IN_QUEUE else 0

    async def status(self, request_id: str, *, with_logs: bool, base_url: str) -> StatusView:
        """Raises `RequestNotFoundError`. Blob references in logs and progress (previews) become URLs."""
        record = await self.get(request_id)
        position = await self.queue_position(record)
        logs = None
        if with_logs:
            events = await self._call(self.store.list_events, request_id, limit=self.max_status_logs)
            logs = [replace(event, message=self.render_text(event.message, base_url=base_url)) for event in events]
        if record.progress is not None:
            record = replace(record, progress=self.render(record.progress, base_url=base_url))
        return StatusView(record=record, queue_position=position, logs=logs)

    async def cancel(self, request_id: str) -> CancelOutcome:
        return await self._call(self.store.request_cancel, request_id, now=time.time())

    async def result(self, request_id: str, *, base_url: str) -> ResultView:
        """Raises `RequestNotFoundError` or `RequestNotFinishedError`."""
        record = await self.get(request_id)
        if record.outcome is None:
            raise RequestNotFinishedError(request_id)
        body = self.render(record.outcome.body, base_url=base_url)
        return ResultView(status_code=record.outcome.status_code, body=body, headers=dict(record.outcome.headers))

    async def wait_until_finished(self, request_id: str, *, poll_interval_s: float) -> JobRecord:
        while True:
            record = await self.get(request_id)
            if record.is_finished:
                return record
            await self.change_feed.wait_for_events(request_id, poll_interval_s)

    def render_text(self, text: str, *, base_url: str) -> str:
        """Blob references inside free text (a log line linking a preview) replaced with URLs."""
        if BLOB_SCHEME not in text:
            return text
        return BLOB_REFERENCE.sub(lambda match: self.blobs.url_for(match.group(1), base_url=base_url), text)

    def render(self, body: Any, *, base_url: str) -> Any:
        """Replace blob references with absolute download URLs."""
        if isinstance(body, str) and body.startswith(BLOB_SCHEME):
            return self.blobs.url_for(body[len(BLOB_SCHEME) :], base_url=base_url)
        if isinstance(body, dict):
            return {key: self.render(value, base_url=base_url) for key, value in body.items()}
        if isinstance(body, list):
            return [self.render(value, base_url=base_url) for value in body]
        return body


BLOB_REFERENCE = re.compile(re.escape(BLOB_SCHEME) + r"([A-Za-z0-9._/-]+)")


def _shorten(value: Any, limit: int = 200) -> Any:
    # Data URIs can be megabytes; an error body echoes only their start.
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "..."
    return value


def _fal_errors(error: pydantic.ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": ["body", *entry["loc"]],
            "msg": entry["msg"],
            "type": entry["type"],
            "input": _shorten(entry.get("input")),
        }
        for entry in error.errors(include_url=False, include_context=False)
    ]
