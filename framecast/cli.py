"""The `framecast` command: serve, worker, run (a client), and developer tools.

Every `Settings` field is a flag (`--lease-s`) and an environment variable
(`FRAMECAST_LEASE_S`); a flag wins over the environment, which wins over the
default.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, get_args

from pydantic import ValidationError

from framecast import __version__
from framecast.bindings import BindingsError
from framecast.settings import Settings
from framecast.store.storage import StorageUnavailableError

logger = logging.getLogger("framecast")

# Seconds an idle keep-alive connection stays open. Clients must give up an idle connection before the server
# closes it, or a reuse races the close and fails ("Server disconnected without sending a response"): httpx
# (fal-client) keeps one 5 s, undici (@fal-ai/client on Node) 4 s, and AWS load balancers 60 s. uvicorn's own
# default is 5 s, the same as httpx's; under load, when both sides lag, that race lost requests.
KEEP_ALIVE_S = 65

SERVE_EPILOG = """\
Every API call needs a key (make one: framecast keys create); on first start, with no key at all,
serve makes one and prints it once. Point the unmodified fal clients at this server:
  export FAL_KEY=<key> FAL_QUEUE_RUN_HOST=HOST:PORT/queue FAL_RUN_HOST=HOST:PORT/run
fal-client (Python) speaks only https: pass --ssl-certfile/--ssl-keyfile (see README) and, for a private CA,
  export SSL_CERT_FILE=/path/to/ca.pem

Every flag can also be set as an environment variable FRAMECAST_<FLAG> (e.g. FRAMECAST_WORKERS=2).
"""


def _add_settings_arguments(parser: argparse.ArgumentParser, names: list[str]) -> None:
    fields = Settings.model_fields
    for name in names:
        field = fields[name]
        flag = "--" + name.replace("_", "-")
        default = field.get_default(call_default_factory=False)
        shown = "" if field.default_factory is not None else f" (default: {default})"
        # argparse %-formats help strings.
        help_text = f"{field.description}{shown} [env FRAMECAST_{name.upper()}]".replace("%", "%%")
        annotation = field.annotation
        if annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        choices = get_args(annotation) if getattr(annotation, "__origin__", None) is not None else None
        literal_choices = choices if choices and all(isinstance(choice, str) for choice in choices) else None
        parser.add_argument(
            flag, dest=name, default=argparse.SUPPRESS, help=help_text, choices=literal_choices, metavar=name.upper()
        )


SERVE_SETTINGS = [
    "host",
    "port",
    "data_dir",
    "db",
    "public_url",
    "ssl_certfile",
    "ssl_keyfile",
    "workers",
    "models",
    "device",
    "torch_threads",
    "safety_checker",
    "lease_s",
    "max_attempts",
    "cancel_grace_s",
    "reaper_interval_s",
    "poll_interval_s",
    "sse_keepalive_s",
    "max_image_pixels",
    "max_input_bytes",
    "max_body_bytes",
    "fetch_timeout_s",
    "allow_private_fetch",
    "max_status_logs",
    "auth",
    "upload_ttl_s",
    "max_upload_bytes",
    "storage",
    "s3_endpoint_url",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_presign_expires_s",
    "webhook_user_id",
    "webhook_max_attempts",
    "webhook_first_retry_s",
    "webhook_timeout_s",
    "webhook_max_payload_bytes",
    "test_faults",
    "metrics_public",
    "log_level",
    "log_format",
]
MODELS_SETTINGS = ["data_dir", "db", "models", "device", "lease_s"]
PULL_SETTINGS = ["data_dir", "models"]
KEYS_SETTINGS = ["data_dir", "db"]
WORKER_SETTINGS = [
    "data_dir",
    "db",
    "models",
    "endpoints",
    "device",
    "torch_threads",
    "safety_checker",
    "lease_s",
    "cancel_grace_s",
    "poll_interval_s",
    "max_image_pixels",
    "storage",
    "s3_endpoint_url",
    "s3_region",
    "s3_access_key_id",
    "s3_secret_access_key",
    "s3_presign_expires_s",
    "log_level",
    "log_format",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framecast", description="Self-hosted image-to-video server, wire-compatible with fal.ai."
    )
    parser.add_argument("--version", action="version", version=f"framecast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="Run the API and its GPU workers (embedded default: SQLite + local files, no other service).",
        description="Run fal's queue API under /queue and its sync run under /run on one port, "
        "plus N worker processes.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_settings_arguments(serve, SERVE_SETTINGS)

    worker = commands.add_parser(
        "worker",
        help="Run one GPU worker process against a job store (one per GPU; use CUDA_VISIBLE_DEVICES).",
        description="Claim and run jobs for the endpoints of the model profile.",
    )
    _add_settings_arguments(worker, WORKER_SETTINGS)

    models = commands.add_parser(
        "models",
        help="Print the catalogue: every endpoint, what serves it, and whether it takes jobs now.",
        description="Without --server, reads this machine's bindings (--models) and the job database's live "
        "workers. With --server, asks a running server (GET /models).",
    )
    _add_settings_arguments(models, MODELS_SETTINGS)
    models.add_argument("--server", metavar="URL", help="A running Framecast server, e.g. http://gpu1:8000.")
    models.add_argument("--json", action="store_true", help="Print the JSON that GET /models returns.")

    pull = commands.add_parser(
        "pull",
        help="Download the weights an endpoint is bound to (or a repo id) into the Hugging Face cache.",
        description="Needs internet access; serving never downloads. Interrupted downloads resume, and "
        "files already in the cache are kept. HF_TOKEN is used for gated repos.",
    )
    pull.add_argument("target", metavar="ENDPOINT_OR_REPO", help="e.g. fal-ai/wan-i2v, or Wan-AI/Wan2.1-...")
    _add_settings_arguments(pull, PULL_SETTINGS)

    keys = commands.add_parser(
        "keys",
        help="Manage API keys and the webhook signing key (in the job database).",
        description="API keys are stored hashed: a key is shown once, when it is made. Clients send it as "
        "'Authorization: Key <key>' (FAL_KEY for the fal clients) or 'Bearer <key>' (the wavespeed SDK).",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="Make a new API key and print it (once).")
    create.add_argument("--name", help="A unique name for the key (default: key-<id>).")
    create.add_argument("--quiet", action="store_true", help="Print only the key.")
    _add_settings_arguments(create, KEYS_SETTINGS)
    listing = key_commands.add_parser("list", help="List API keys (ids and names, never the keys).")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    _add_settings_arguments(listing, KEYS_SETTINGS)
    revoke = key_commands.add_parser("revoke", help="Revoke an API key at once, on every replica.")
    revoke.add_argument("key", metavar="KEY_ID_OR_NAME")
    _add_settings_arguments(revoke, KEYS_SETTINGS)
    webhook = key_commands.add_parser(
        "webhook",
        help="Show or rotate the Ed25519 key that signs fal webhooks (published at /.well-known/jwks.json).",
        description="show: the published keys and which one signs. rotate: a new key signs from now on; the old "
        "one stays published until you retire it, so receivers with a cached JWKS keep verifying. "
        "retire KID: stop publishing a key.",
    )
    webhook.add_argument("action", choices=["show", "rotate", "retire"], nargs="?", default="show")
    webhook.add_argument("kid", nargs="?", help="The key id to retire.")
    _add_settings_arguments(webhook, KEYS_SETTINGS)

    from framecast import cli_run

    run = commands.add_parser(
        "run",
        help="Run one image-to-video job on a Framecast server or on fal, with progress; save the MP4.",
        description="Submit a job through fal's queue protocol, show its queue position, progress bar and "
        "(--logs) logs, save the video to --out and print the result JSON. Ctrl-C cancels the job on the server.",
        epilog=cli_run.RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_run.add_arguments(run)

    dev = commands.add_parser("dev", help="Developer tools.")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    tiny = dev_commands.add_parser(
        "tiny-models",
        help="Build the random-weight test pipelines offline into DIR (seconds, CPU, no download).",
    )
    tiny.add_argument("directory", type=Path, metavar="DIR")
    return parser


def load_settings(arguments: argparse.Namespace, names: list[str]) -> Settings:
    overrides: dict[str, Any] = {name: getattr(arguments, name) for name in names if hasattr(arguments, name)}
    return Settings(**overrides)


def configure_logging(settings: Settings) -> None:
    from framecast.logs import configure_logging as configure

    configure(settings.log_level, settings.log_format)


def ensure_tiny_models(settings: Settings) -> None:
    """Build the tiny models in a child process: the API process never imports torch."""
    from framecast.bindings import resolve_bindings, tiny_models_dir

    directory = tiny_models_dir(settings.data_dir)
    bindings = resolve_bindings("tiny", data_dir=settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Several `framecast worker --models tiny` on one data dir may start together: one builds, the others wait.
    with open(settings.data_dir / "tiny-models.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((Path(binding.weights) / "framecast-tiny.json").is_file() for binding in bindings):
            return
        subprocess.run([sys.executable, "-m", "framecast", "dev", "tiny-models", str(directory)], check=True)


def lock_data_dir(data_dir: Path) -> int:
    """One `serve` per data directory: two would both think they own the SQLite workers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(data_dir / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"framecast: another `framecast serve` is using {data_dir}") from None
    return descriptor


def announce_auth(settings: Settings) -> None:
    """--no-auth is shouted; with auth on and no key at all, a first key is made and shown once."""
    if not settings.auth:
        banner = "!" * 78
        logger.warning(
            "\n%s\n--no-auth: NO API KEY IS CHECKED. Anyone who can reach %s:%s can run jobs and read results.\n"
            "Use this for local development only.\n%s",
            banner, settings.host, settings.port, banner,
        )  # fmt: skip
        return
    import time

    from framecast.service.auth import new_api_key
    from framecast.store.credentials import DuplicateKeyNameError, SqlCredentialStore
    from framecast.store.database import SqlDatabase

    database = SqlDatabase(settings.database_url)
    try:
        credentials = SqlCredentialStore(database)
        if any(record.is_active for record in credentials.list_api_keys()):
            return
        made = new_api_key("initial", now=time.time())
        try:
            credentials.add_api_key(made.record)
        except DuplicateKeyNameError:
            made = new_api_key(None, now=time.time())
            credentials.add_api_key(made.record)
    finally:
        database.close()
    print(
        f"\nNo API key existed, so this one was made ({made.record.name}). It is shown only now:\n\n"
        f"  {made.key}\n\n"
        "Clients send it as FAL_KEY (fal clients) or api_key (wavespeed). Manage keys with "
        "`framecast keys create|list|revoke`.\n",
        file=sys.stderr,
        flush=True,
    )


def serve(settings: Settings) -> int:
    import uvicorn

    from framecast.app import create_app
    from framecast.logs import logging_config
    from framecast.worker.supervisor import WorkerSupervisor

    configure_logging(settings)
    if settings.workers > 0:
        # API-only replicas (--workers 0) may share a data directory; they own no workers.
        lock_data_dir(settings.data_dir)
    if settings.models == "tiny" and settings.workers > 0:
        ensure_tiny_models(settings)
    if settings.test_faults:
        logger.warning("--test-faults is on: X-Framecast-Test-Fault headers can break jobs. Tests only!")
    if settings.allow_private_fetch:
        logger.warning("--allow-private-fetch is on: input URLs may reach loopback and private networks.")
    # Storage and bindings are checked first, so a first key is never printed by a run that then fails.
    app = create_app(settings)
    announce_auth(settings)
    local = [binding for binding in app.state.framecast.catalogue.bindings.values() if not binding.is_relay]
    workers = settings.workers if local else 0
    if workers != settings.workers:
        logger.info("every bound endpoint is relayed: no GPU worker is started")
    supervisor = WorkerSupervisor(settings, workers)
    supervisor.start()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        log_level=settings.log_level,
        # uvicorn's access and error lines in our format (uvicorn applies this config itself).
        log_config=logging_config(settings.log_level, settings.log_format),
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        supervisor.stop(timeout_s=settings.cancel_grace_s + 5)
    return 0


def run_worker(settings: Settings) -> int:
    from framecast.bindings import resolve_bindings, select_bindings
    from framecast.store.changes import open_change_feed
    from framecast.store.sql_jobs import SqlJobStore
    from framecast.store.storage import open_blob_store
    from framecast.worker.linux import die_with_parent
    from framecast.worker.supervisor import SUPERVISOR_PID_ENV
    from framecast.worker.worker import Worker, WorkerConfig

    supervisor_pid = os.environ.get(SUPERVISOR_PID_ENV)
    if supervisor_pid:
        die_with_parent(int(supervisor_pid))
    configure_logging(settings)
    # Relayed endpoints are run by the API process (framecast.relay), never by a GPU worker.
    local = [
        binding
        for binding in resolve_bindings(
            settings.models,
            data_dir=settings.data_dir,
            device=settings.device,
            allow_test_engines=settings.test_faults,
        )
        if not binding.is_relay
    ]
    bindings = select_bindings(local, settings.endpoints)
    if settings.models == "tiny" and not supervisor_pid:
        # A worker started on its own (not by `serve`, which builds them first) builds the tiny models itself.
        ensure_tiny_models(settings)
    store = SqlJobStore(settings.database_url)
    # On PostgreSQL an idle worker sleeps until NOTIFY says a job came; on SQLite it polls.
    change_feed = open_change_feed(store.database)
    worker = Worker(
        store=store,
        change_feed=change_feed,
        blobs=open_blob_store(settings),
        bindings=bindings,
        config=WorkerConfig(
            lease_s=settings.lease_s,
            cancel_grace_s=settings.cancel_grace_s,
            poll_interval_s=settings.poll_interval_s,
            max_image_pixels=settings.max_image_pixels,
            tmp_dir=settings.tmp_dir,
            torch_threads=settings.torch_threads,
            safety_checker=settings.safety_checker,
            log_level=settings.log_level,
            log_format=settings.log_format,
        ),
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stop_event.set()
        # Ends an idle worker's wait for jobs now rather than at its next poll.
        change_feed.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner = threading.Thread(target=worker.run_forever, name="worker")
    runner.start()
    # The main thread only waits, so signal handlers run promptly.
    while runner.is_alive():
        runner.join(timeout=0.5)
    change_feed.close()
    store.close()
    return 0


def build_tiny_models(directory: Path) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from framecast.engines.tiny_models import build_tiny_models as build

    for name, path in build(directory).items():
        print(f"{name}: {path}")
    return 0


def catalogue_json(settings: Settings) -> dict[str, Any]:
    """What GET /models answers, computed here from the settings and the job database (if there is one)."""
    from framecast.service.catalogue import CatalogueService
    from framecast.store.database import sqlite_path
    from framecast.store.sql_jobs import SqlJobStore

    database = sqlite_path(settings.database_url)
    # Looking must not create a database: without one there are simply no workers.
    store = None if database is not None and not database.exists() else SqlJobStore(settings.database_url)
    try:
        return CatalogueService.from_settings(settings, store=store).to_json()
    finally:
        if store is not None:
            store.close()


def print_catalogue(catalogue: dict[str, Any]) -> None:
    rows = [
        (entry["endpoint_id"], entry["kind"], entry["state"], entry["engine"] or "-", entry["model"] or "-")
        for entry in catalogue["endpoints"]
    ]
    header = ("ENDPOINT", "KIND", "STATE", "ENGINE", "MODEL")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    print(f"bindings: {catalogue['bindings']}")
    for row in [header, *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
    reasons = [(entry["endpoint_id"], entry["reason"]) for entry in catalogue["endpoints"] if entry["reason"]]
    if reasons:
        print("\nNot taking jobs:")
        for _endpoint_id, reason in reasons:
            print(f"  - {reason}")


def show_models(arguments: argparse.Namespace) -> int:
    # `framecast models | head` should end quietly.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if arguments.server:
        import httpx

        response = httpx.get(arguments.server.rstrip("/") + "/models", timeout=30)
        response.raise_for_status()
        catalogue: dict[str, Any] = response.json()
    else:
        catalogue = catalogue_json(load_settings(arguments, MODELS_SETTINGS))
    if arguments.json:
        print(json.dumps(catalogue, indent=2))
    else:
        print_catalogue(catalogue)
    return 0


def run_pull(arguments: argparse.Namespace) -> int:
    from framecast.bindings import resolve_bindings
    from framecast.pull import PullError, format_bytes, pull, pull_plan

    settings = load_settings(arguments, PULL_SETTINGS)
    try:
        items = pull_plan(arguments.target, resolve_bindings(settings.models, data_dir=settings.data_dir))
    except PullError as error:
        print(f"framecast: {error}", file=sys.stderr)
        return 2
    total_bytes = 0
    for item in items:
        print(f"Pulling {item.repo_id} into the Hugging Face cache...", file=sys.stderr)
        report = pull(item)
        total_bytes += report.size_bytes
        print(
            f"{report.repo_id}: {report.files} files, {format_bytes(report.size_bytes)} in {report.snapshot} "
            f"({format_bytes(report.free_bytes)} free on that disk)"
        )
    if len(items) > 1:
        print(f"{arguments.target}: {len(items)} repositories, {format_bytes(total_bytes)} in all")
    return 0


def _credentials(arguments: argparse.Namespace) -> Any:
    from framecast.store.credentials import SqlCredentialStore
    from framecast.store.database import SqlDatabase

    return SqlCredentialStore(SqlDatabase(load_settings(arguments, KEYS_SETTINGS).database_url))


def _when(seconds: float | None) -> str:
    import datetime

    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def run_keys(arguments: argparse.Namespace) -> int:
    import time

    from framecast.service.auth import new_api_key
    from framecast.service.webhooks import ensure_signing_key, jwks, new_signing_key
    from framecast.store.credentials import DuplicateKeyNameError

    credentials = _credentials(arguments)
    now = time.time()
    if arguments.keys_command == "create":
        made = new_api_key(arguments.name, now=now)
        name = made.record.name
        try:
            credentials.add_api_key(made.record)
        except DuplicateKeyNameError:
            print(f"framecast: a key named {name!r} exists already", file=sys.stderr)
            return 1
        if arguments.quiet:
            print(made.key)
        else:
            print(f"Created API key {made.record.key_id} ({name}). It is shown only now; store it safely:\n")
            print(f"  {made.key}\n")
            print(f"Use it as FAL_KEY={made.key} (fal clients) or as the wavespeed SDK's api_key.")
        return 0
    if arguments.keys_command == "list":
        records = credentials.list_api_keys()
        if arguments.json:
            print(json.dumps([
                {"key_id": r.key_id, "name": r.name, "created_at": r.created_at, "revoked_at": r.revoked_at}
                for r in records
            ], indent=2))  # fmt: skip
            return 0
        rows = [("KEY_ID", "NAME", "CREATED", "REVOKED")]
        rows += [(r.key_id, r.name, _when(r.created_at), _when(r.revoked_at)) for r in records]
        widths = [max(len(row[column]) for row in rows) for column in range(4)]
        for row in rows:
            print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip())
        return 0
    if arguments.keys_command == "revoke":
        record = credentials.revoke_api_key(arguments.key, now=now)
        if record is None:
            print(f"framecast: no API key with the id or name {arguments.key!r}", file=sys.stderr)
            return 1
        print(f"Revoked {record.key_id} ({record.name}) at {_when(record.revoked_at)}")
        return 0
    # webhook
    if arguments.action == "rotate":
        record = new_signing_key(now=now)
        credentials.add_signing_key(record)
        print(f"{record.kid} signs from now on; retire the old key once receivers have refreshed their JWKS.")
    elif arguments.action == "retire":
        if not arguments.kid:
            print("framecast: keys webhook retire needs the KID to retire", file=sys.stderr)
            return 2
        if not credentials.retire_signing_key(arguments.kid, now=now):
            print(f"framecast: no signing key {arguments.kid!r}", file=sys.stderr)
            return 1
        print(f"Retired {arguments.kid}: it is no longer published.")
    signing = ensure_signing_key(credentials, now=now)
    print(f"Signing key: {signing.kid}")
    print(json.dumps(jwks(credentials.list_signing_keys()), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "serve":
            return serve(load_settings(arguments, SERVE_SETTINGS))
        if arguments.command == "worker":
            return run_worker(load_settings(arguments, WORKER_SETTINGS))
        if arguments.command == "models":
            return show_models(arguments)
        if arguments.command == "pull":
            return run_pull(arguments)
        if arguments.command == "keys":
            return run_keys(arguments)
        if arguments.command == "run":
            from framecast.cli_run import run

            return run(arguments)
    except ValidationError as error:
        parser.exit(2, f"framecast: invalid settings:\n{error}\n")
    except BindingsError as error:
        parser.exit(2, f"framecast: {error}\n")
    except StorageUnavailableError as error:
        parser.exit(2, f"framecast: storage: {error}\n")
    if arguments.command == "dev" and arguments.dev_command == "tiny-models":
        return build_tiny_models(arguments.directory)
    parser.error("unknown command")
    return 2
