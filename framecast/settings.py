"""The one immutable settings object. Its defaults are the embedded mode.

Every field can be set by a `FRAMECAST_<NAME>` environment variable or by the
matching `framecast serve --<name>` flag (flags win). Settings are read once at
start-up and never again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from framecast.store.storage import parse_storage_url


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "framecast"


class Settings(BaseSettings):
    # Errors never echo their input: it may hold --s3-secret-access-key.
    model_config = SettingsConfigDict(env_prefix="FRAMECAST_", frozen=True, extra="forbid", hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    data_dir: Path = Field(default_factory=default_data_dir, description="Job database, files and tiny models.")
    db: str | None = Field(None, description="Job store URL. Default: SQLite at DATA_DIR/framecast.db.")
    public_url: str | None = Field(
        None,
        description="Absolute base URL clients reach this server at (e.g. https://gpu1.example.com). "
        "Default: taken from each request's Host header.",
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM). fal-client speaks only https.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM).")

    workers: int = Field(1, ge=0, description="GPU worker processes to start (0 = API only).")
    models: str = Field(
        "default",
        description="Model profile: 'default' (real weights from the Hugging Face cache or local dirs) "
        "or 'tiny' (random-weight test models built offline, CPU).",
    )
    device: str | None = Field(None, description="Override the device of every binding (cpu, cuda, cuda:1).")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads per engine process (torch.set_num_threads). Default: torch's choice."
    )

    endpoints: str | None = Field(
        None,
        description="`framecast worker` only: the endpoint ids this worker serves, comma-separated "
        "(e.g. fal-ai/wan-i2v,fal-ai/wan-flf2v). Default: every endpoint the bindings bind to a local engine.",
    )
    safety_checker: str | None = Field(
        None,
        description="MODULE:FACTORY of the output safety checker that requests with enable_safety_checker "
        "use (docs/engines.md#safety-checker). Default: none; such requests then log that nothing was checked.",
    )

    auth: bool = Field(
        True,
        description="Require an API key (Authorization: Key|Bearer <key>) on the API; --no-auth is for local "
        "development only. Keys: framecast keys create.",
    )
    storage: str = Field(
        "local",
        description="Where input and output files live: 'local' = files under DATA_DIR/files, served at /files; "
        "'s3://BUCKET/PREFIX' = an S3 bucket or any S3-compatible server (see --s3-endpoint-url); results then "
        "hold presigned URLs. The bucket must exist. docs/storage.md",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible server (MinIO, R2, moto…), e.g. http://127.0.0.1:9000. Default: AWS S3."
    )
    s3_region: str | None = Field(None, description="S3 region. Default: boto3's (AWS_REGION, ~/.aws/config).")
    s3_access_key_id: str | None = Field(
        None,
        description="S3 access key. Default: boto3's standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE and ~/.aws files, container and instance roles).",
    )
    s3_secret_access_key: str | None = Field(
        None,
        repr=False,
        description="S3 secret key, given with --s3-access-key-id. Prefer the environment variable over the flag "
        "(a flag is visible in the process list).",
    )
    s3_presign_expires_s: float = Field(
        7 * 24 * 3600.0,
        ge=1,
        le=7 * 24 * 3600,
        description="Life of each presigned download URL (at most 7 days, SigV4's limit). Every read of a result "
        "signs fresh URLs, so reading it again gives working ones.",
    )
    upload_ttl_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="Seconds an uploaded file is kept before it is deleted (default 7 days)."
    )
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, description="Largest upload, in bytes.")
    webhook_user_id: str = Field(
        "framecast", min_length=1, description="X-Fal-Webhook-User-Id of our fal webhooks (part of the signed text)."
    )
    webhook_max_attempts: int = Field(10, ge=1, description="Tries per webhook before giving up.")
    webhook_first_retry_s: float = Field(
        15.0,
        gt=0,
        description="Wait before the first retry of a failed webhook; each next wait doubles (±20% jitter), "
        "so 10 tries span about 2 hours.",
    )
    webhook_timeout_s: float = Field(15.0, gt=0, description="Time allowed for one webhook POST.")
    webhook_max_payload_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest fal webhook payload; a bigger one is sent as payload null with payload_error.",
    )

    lease_s: float = Field(30.0, gt=0, description="A claimed job's lease; a worker silent this long loses it.")
    max_attempts: int = Field(3, ge=1, description="Times a job is started before a lost worker fails it.")
    cancel_grace_s: float = Field(10.0, gt=0, description="Seconds a cancelled model gets to stop before SIGKILL.")
    reaper_interval_s: float = Field(1.0, gt=0, description="How often expired leases and deadlines are checked.")
    poll_interval_s: float = Field(
        0.2,
        gt=0,
        description="How often SSE streams, sync runs, the relay and a busy worker's engine look for news "
        "(idle workers look for jobs every 20 ms with a cheap read).",
    )
    sse_keepalive_s: float = Field(15.0, gt=0, description="Seconds between SSE keep-alive comments.")

    max_image_pixels: int = Field(4096 * 4096, gt=0, description="Largest input image, in pixels.")
    max_input_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest input file or data URI, in bytes.")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body, in bytes.")
    fetch_timeout_s: float = Field(30.0, gt=0, description="Total time allowed to download one input URL.")
    allow_private_fetch: bool = Field(
        False, description="Allow input URLs on loopback and private networks (development and tests only)."
    )
    max_status_logs: int = Field(1000, gt=0, description="Most recent log lines returned by a status call.")

    test_faults: bool = Field(
        False,
        description="Honour the X-Framecast-Test-Fault header (raise/block/exit inside the engine). Tests only.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Server log level.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="Log lines on stderr: 'text' (one readable line, with request_id=... when one applies) or "
        "'json' (one JSON object per line, for log shippers; docs/operations.md).",
    )
    metrics_public: bool = Field(
        False,
        description="Serve GET /metrics (Prometheus) without an API key, for a scraper on a private network. "
        "By default it needs a key like the rest of the API (Prometheus: authorization.credentials).",
    )

    @field_validator("storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        parse_storage_url(value)
        return value

    @model_validator(mode="after")
    def _check_s3_options(self) -> Settings:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("--s3-access-key-id and --s3-secret-access-key must be given together")
        given = [
            name for name in ("s3_endpoint_url", "s3_region", "s3_access_key_id") if getattr(self, name) is not None
        ]
        if given and parse_storage_url(self.storage) is None:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags}: only with --storage s3://BUCKET/PREFIX")
        return self

    @model_validator(mode="after")
    def _check_tls_pair(self) -> Settings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("--ssl-certfile and --ssl-keyfile must be given together")
        return self

    @property
    def database_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir / 'framecast.db'}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"
