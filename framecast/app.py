"""The app factory: `create_app(settings)` wires the store, blobs, service and routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from framecast import __version__
from framecast.api import files_router, health_router, models_router, queue_router, run_router
from framecast.api.errors import install_error_handlers
from framecast.api.openapi import add_endpoint_routes
from framecast.api.state import AppState
from framecast.bindings import ModelBinding
from framecast.inputs.safe_fetch import FetchPolicy
from framecast.service.catalogue import CatalogueService
from framecast.service.queue import EndpointReadiness, QueueService
from framecast.settings import Settings
from framecast.store.blobs import BlobStore, LocalBlobStore
from framecast.store.jobs import JobStore
from framecast.store.sql_jobs import SqlJobStore
from framecast.worker.identity import is_worker_alive

logger = logging.getLogger("framecast.api")


async def reap_forever(store: JobStore, interval_s: float) -> None:
    while True:
        try:
            report = await anyio.to_thread.run_sync(
                lambda: store.reap(now=time.time(), is_worker_alive=is_worker_alive)
            )
            for request_id in report.requeued:
                logger.warning("requeued %s: its worker was lost", request_id)
            for request_id in report.failed:
                logger.error("failed %s: out of attempts", request_id)
        except Exception:
            logger.exception("reaper pass failed; retrying")
        await asyncio.sleep(interval_s)


def create_app(
    settings: Settings,
    *,
    store: JobStore | None = None,
    blobs: BlobStore | None = None,
    bindings: Sequence[ModelBinding] | None = None,
    readiness: EndpointReadiness | None = None,
) -> FastAPI:
    """Build the API. `store`, `blobs`, `bindings` and `readiness` default to the embedded mode's.

    Raises `BindingsError` when `settings.models` names a bindings file that cannot be used.
    """
    job_store: JobStore = store if store is not None else SqlJobStore(settings.database_url)
    blob_store: BlobStore = blobs if blobs is not None else LocalBlobStore(settings.files_dir)
    catalogue = CatalogueService.from_settings(settings, store=job_store, bindings=bindings)
    endpoints = catalogue.catalogue
    queue = QueueService(
        store=job_store,
        blobs=blob_store,
        catalogue=endpoints,
        fetch_policy=FetchPolicy(
            max_bytes=settings.max_input_bytes,
            total_timeout_s=settings.fetch_timeout_s,
            allow_private=settings.allow_private_fetch,
        ),
        max_image_pixels=settings.max_image_pixels,
        max_attempts=settings.max_attempts,
        max_status_logs=settings.max_status_logs,
        readiness=readiness if readiness is not None else catalogue.readiness,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(reap_forever(job_store, settings.reaper_interval_s))
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper

    app = FastAPI(
        title="Framecast",
        version=__version__,
        description="Self-hosted image-to-video server, wire-compatible with fal.ai's queue API.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.framecast = AppState(
        settings=settings, store=job_store, blobs=blob_store, queue=queue, catalogue=catalogue
    )
    install_error_handlers(app)
    app.include_router(health_router.router)
    app.include_router(files_router.router)
    app.include_router(queue_router.router)
    app.include_router(run_router.router)
    app.include_router(models_router.router)

    def openapi() -> dict[str, Any]:
        # FastAPI's document, plus an explicit submit and run route per endpoint with its own schemas.
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = add_endpoint_routes(document, endpoints)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
