"""The app factory: `create_app(settings)` wires the store, blobs, service and routers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from framecast import __version__
from framecast.api import (
    files_router,
    health_router,
    history_router,
    metrics_router,
    models_router,
    playground_router,
    queue_router,
    run_router,
    wellknown_router,
)
from framecast.api.errors import install_error_handlers
from framecast.api.openapi import add_endpoint_routes
from framecast.api.protocol import fal_webhook_payload
from framecast.api.proxy import FalProxyMiddleware
from framecast.api.request_context import RequestContextMiddleware, bind_path_request_id
from framecast.api.state import AppState
from framecast.api.storage_router import build_storage_router
from framecast.api.wavespeed_router import build_wavespeed_router, wavespeed_webhook_payload
from framecast.bindings import ModelBinding
from framecast.inputs.safe_fetch import FetchPolicy
from framecast.relay.worker import RelayWorker
from framecast.service.auth import Authenticator
from framecast.service.catalogue import CatalogueService, worker_timeout_s
from framecast.service.metrics import Metrics
from framecast.service.queue import EndpointAvailability, EndpointReadiness, QueueService
from framecast.service.tokens import TokenSigner
from framecast.service.uploads import UploadService
from framecast.service.webhooks import (
    FAL_FORMAT,
    WAVESPEED_FORMAT,
    PayloadBuilder,
    WebhookPolicy,
    WebhookSender,
    ensure_signing_key,
)
from framecast.settings import Settings
from framecast.store.blobs import BlobStore
from framecast.store.changes import open_change_feed
from framecast.store.credentials import SqlCredentialStore
from framecast.store.database import SqlDatabase
from framecast.store.jobs import JobStore
from framecast.store.outbox import SqlWebhookOutbox
from framecast.store.sql_jobs import SqlJobStore
from framecast.store.statistics import SqlJobStatistics
from framecast.store.storage import open_blob_store
from framecast.store.uploads import SqlUploadLedger
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


async def sweep_uploads_forever(uploads: UploadService, interval_s: float) -> None:
    while True:
        try:
            swept = await anyio.to_thread.run_sync(lambda: uploads.sweep(now=time.time()))
            if swept:
                logger.info("deleted %d expired uploads", len(swept))
        except Exception:
            logger.exception("upload sweep failed; retrying")
        await asyncio.sleep(interval_s)


UPLOAD_SWEEP_INTERVAL_S = 60.0
WEBHOOK_POLL_INTERVAL_S = 0.5
# Multipart framing on top of the file itself.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024


def create_app(
    settings: Settings,
    *,
    store: JobStore | None = None,
    blobs: BlobStore | None = None,
    bindings: Sequence[ModelBinding] | None = None,
    readiness: EndpointReadiness | None = None,
) -> FastAPI:
    """Build the API. `store`, `blobs`, `bindings` and `readiness` default to the embedded mode's.

    Raises `BindingsError` when `settings.models` names a bindings file that cannot be used, and
    `StorageUnavailableError` when `settings.storage` names a bucket that cannot be used.
    """
    if store is None:
        store = SqlJobStore(SqlDatabase(settings.database_url))
    job_store: JobStore = store
    # Credentials, the outbox and the upload ledger live in the job store's database (one transaction per result).
    database = store.database if isinstance(store, SqlJobStore) else SqlDatabase(settings.database_url)
    credentials = SqlCredentialStore(database)
    outbox = SqlWebhookOutbox(database)
    # Wakes status streams and sync runs when their job has news: LISTEN/NOTIFY on PostgreSQL, polling on SQLite.
    changes = open_change_feed(database)
    blob_store: BlobStore = blobs if blobs is not None else open_blob_store(settings)
    fetch_policy = FetchPolicy(
        max_bytes=settings.max_input_bytes,
        total_timeout_s=settings.fetch_timeout_s,
        allow_private=settings.allow_private_fetch,
    )
    tokens = TokenSigner(bytes.fromhex(credentials.secret("url_signing_secret", now=time.time())))
    uploads = UploadService(
        blobs=blob_store,
        ledger=SqlUploadLedger(database),
        signer=tokens,
        tmp_dir=settings.tmp_dir,
        max_upload_bytes=settings.max_upload_bytes,
        upload_ttl_s=settings.upload_ttl_s,
    )
    catalogue = CatalogueService.from_settings(settings, store=job_store, bindings=bindings)
    endpoints = catalogue.catalogue
    queue = QueueService(
        store=job_store,
        blobs=blob_store,
        catalogue=endpoints,
        fetch_policy=fetch_policy,
        max_image_pixels=settings.max_image_pixels,
        max_attempts=settings.max_attempts,
        max_status_logs=settings.max_status_logs,
        # Readiness and the serving engine (closed endpoints are planned in its terms) from one look at the workers;
        # a `readiness` given by the caller replaces the look, and the bindings then name the engine.
        availability=catalogue.availability
        if readiness is None
        else lambda endpoint_id: EndpointAvailability(readiness(endpoint_id), catalogue.bound_engine(endpoint_id)),
        change_feed=changes,
    )

    payloads: dict[str, PayloadBuilder] = {
        FAL_FORMAT: functools.partial(fal_webhook_payload, max_payload_bytes=settings.webhook_max_payload_bytes),
        WAVESPEED_FORMAT: wavespeed_webhook_payload,
    }
    webhooks = WebhookSender(
        store=job_store,
        outbox=outbox,
        credentials=credentials,
        payloads=payloads,
        render=lambda body, base: queue.render(body, base_url=base),
        policy=WebhookPolicy(
            max_attempts=settings.webhook_max_attempts,
            first_retry_s=settings.webhook_first_retry_s,
            timeout_s=settings.webhook_timeout_s,
            user_id=settings.webhook_user_id,
            fetch_policy=FetchPolicy(
                total_timeout_s=settings.webhook_timeout_s,
                read_timeout_s=settings.webhook_timeout_s,
                allow_private=settings.allow_private_fetch,
            ),
        ),
        default_base_url=settings.public_url,
    )

    relay_bindings = [binding for binding in catalogue.bindings.values() if binding.is_relay]
    relay = (
        RelayWorker(
            store=job_store,
            blobs=blob_store,
            bindings=relay_bindings,
            lease_s=settings.lease_s,
            cancel_grace_s=settings.cancel_grace_s,
            tmp_dir=settings.tmp_dir,
        )
        if relay_bindings
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The JWKS is never empty, and every replica signs with the same key.
        await anyio.to_thread.run_sync(lambda: ensure_signing_key(credentials, now=time.time()))
        tasks = [
            asyncio.create_task(reap_forever(job_store, settings.reaper_interval_s)),
            asyncio.create_task(webhooks.run_forever(WEBHOOK_POLL_INTERVAL_S)),
            asyncio.create_task(sweep_uploads_forever(uploads, UPLOAD_SWEEP_INTERVAL_S)),
        ]
        if relay is not None:
            # Relayed endpoints wait on the network, not a GPU: the API process runs them, many at once.
            tasks.append(asyncio.create_task(relay.run_forever(settings.poll_interval_s)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(changes.close)

    app = FastAPI(
        title="Framecast",
        version=__version__,
        description="Self-hosted image-to-video server, wire-compatible with fal.ai's queue API.",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
        # Log lines of a request about one job (a {request_id} in the path) name it.
        dependencies=[Depends(bind_path_request_id)],
    )
    metrics = Metrics(
        statistics=SqlJobStatistics(database),
        store=job_store,
        endpoint_ids=sorted(catalogue.bindings),
        worker_timeout_s=worker_timeout_s(settings.lease_s),
    )
    app.state.framecast = AppState(
        settings=settings,
        store=job_store,
        blobs=blob_store,
        queue=queue,
        catalogue=catalogue,
        credentials=credentials,
        authenticator=Authenticator(credentials),
        uploads=uploads,
        tokens=tokens,
        webhooks=webhooks,
        metrics=metrics,
        changes=changes,
    )
    install_error_handlers(app)
    # Inside the proxy middleware, so it sees the route that served a proxied request.
    app.add_middleware(RequestContextMiddleware, metrics=metrics.http)
    app.add_middleware(FalProxyMiddleware)
    app.include_router(health_router.router)
    app.include_router(metrics_router.router)
    app.include_router(files_router.router)
    app.include_router(queue_router.router)
    app.include_router(run_router.router)
    app.include_router(models_router.router)
    app.include_router(wellknown_router.router)
    app.include_router(history_router.router)
    app.include_router(playground_router.router)
    upload_body_bytes = max(settings.max_body_bytes, settings.max_upload_bytes + UPLOAD_OVERHEAD_BYTES)
    app.include_router(build_storage_router(), max_body_size=upload_body_bytes)
    app.include_router(build_wavespeed_router(), max_body_size=upload_body_bytes)

    def openapi() -> dict[str, Any]:
        # FastAPI's document, plus an explicit submit and run route per endpoint with its own schemas.
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = add_endpoint_routes(document, endpoints)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
