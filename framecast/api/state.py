"""What the routers find on `app.state`."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from framecast.service.auth import Authenticator
from framecast.service.catalogue import CatalogueService
from framecast.service.metrics import Metrics
from framecast.service.queue import QueueService
from framecast.service.tokens import TokenSigner
from framecast.service.uploads import UploadService
from framecast.service.webhooks import WebhookSender
from framecast.settings import Settings
from framecast.store.blobs import BlobStore
from framecast.store.changes import ChangeFeed
from framecast.store.credentials import CredentialStore
from framecast.store.jobs import JobStore


@dataclass(frozen=True)
class AppState:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    queue: QueueService
    catalogue: CatalogueService
    credentials: CredentialStore
    authenticator: Authenticator
    uploads: UploadService
    tokens: TokenSigner
    webhooks: WebhookSender
    # Wakes SSE streams when their job has news (PostgreSQL); a plain poll on SQLite.
    changes: ChangeFeed
    metrics: Metrics


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.framecast
    return state


def base_url(request: Request) -> str:
    """The absolute URL clients reach us at: the configured public URL, else what this request used."""
    configured = app_state(request).settings.public_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/")
