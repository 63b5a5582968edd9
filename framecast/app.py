"""The app factory: `create_app(settings)` wires the store, blobs, service and routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from framecast import __version__
from framecast.api import files_router, health_router, queue_router, run_router
from framecast.api.errors import install_error_handlers
from framecast.api.health_router import worker_timeout_s
from framecast.api.state import AppState
from framecast.endpoints import build_catalogue
from framecast.inputs.safe_fetch import FetchPolicy
from framecast.service.queue import EndpointReadiness, QueueService
from framecast.settings import Settings
from framecast.store.blobs import BlobStore, LocalBlobStore
from framecast.store.jobs import JobStore
from framecast.store.sql_jobs import SqlJobStore
from framecast.worker.identity import is_worker_alive

logger = logging.getLogger("framecast.api")


def worker_readiness(store: JobStore, lease_s: float) -> EndpointReadiness:
    """Refuse jobs that no live worker can run, and say why."""

    def readiness(endpoint_id: str) -> str | None:
        workers = [
            worker
            for worker in store.list_workers(alive_after=time.time() - worker_timeout_s(lease_s))
            if endpoint_id in worker.endpoint_ids
        ]
        if any(worker.state in ("ready", "loading") for worker in workers):
            return None
        errors = sorted({worker.error for worker in workers if worker.error})
        if errors:
            return f"No worker can run {endpoint_id}: " + "; ".join(errors)
        return (
            f"No worker serving {endpoint_id} is running. Start one with `framecast serve --workers 1` "
            "or `framecast worker`."
        )

    return readiness


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
    readiness: EndpointReadiness | None = None,
) -> FastAPI:
    """Build the API. `store`, `blobs` and `readiness` default to the embedded mode's."""
    job_store: JobStore = store if store is not None else SqlJobStore(settings.database_url)
    blob_store: BlobStore = blobs if blobs is not None else LocalBlobStore(settings.files_dir)
    queue = QueueService(
        store=job_store,
        blobs=blob_store,
        catalogue=build_catalogue(),
        fetch_policy=FetchPolicy(
            max_bytes=settings.max_input_bytes,
            total_timeout_s=settings.fetch_timeout_s,
            allow_private=settings.allow_private_fetch,
        ),
        max_image_pixels=settings.max_image_pixels,
        max_attempts=settings.max_attempts,
        max_status_logs=settings.max_status_logs,
        readiness=readiness if readiness is not None else worker_readiness(job_store, settings.lease_s),
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
    app.state.framecast = AppState(settings=settings, store=job_store, blobs=blob_store, queue=queue)
    install_error_handlers(app)
    app.include_router(health_router.router)
    app.include_router(files_router.router)
    app.include_router(queue_router.router)
    app.include_router(run_router.router)
    return app
