"""`framecast run`: one image-to-video job through fal's queue protocol, from the terminal.

Works against any Framecast server and against fal itself (protocol.md §1): submit, then
status polling every `POLL_INTERVAL_S` (0.25 s; polling rather than the SSE stream, because
every fal-protocol server answers it and it survives reconnects), then the result, then the
download of `video.url`. Progress, the queue position and logs go to stderr; stdout gets
only the result JSON (or a failed job's error body), so `framecast run ... > result.json`
keeps a clean record.

Exit codes: 0 the video is saved; 1 the job failed or was refused (its error body is on
stdout); 2 usage (bad arguments, a missing image file); 3 the server could not be reached
or answered something unexpected; 130 interrupted (Ctrl-C cancels the job on the server).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import mimetypes
import os
import signal
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TextIO
from urllib.parse import quote

import httpx

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

FAL_QUEUE_URL = "https://queue.fal.run"
FAL_QUEUE_HOSTS = ("queue.fal.run", "queue.falrun.com")
FAL_SCHEMA_ROOT = "https://fal.ai"
# Input fields that take the first frame and the last frame, in order of preference.
START_IMAGE_FIELDS = ("image_url", "start_image_url", "first_image_url", "input_image_url", "image", "start_image")
END_IMAGE_FIELDS = ("end_image_url", "last_image_url", "tail_image_url", "end_image", "last_image")

POLL_INTERVAL_S = 0.25
CANCEL_WAIT_S = 15.0
# Consecutive status polls may fail (a server restart, a dropped connection) for this long.
RETRY_WINDOW_S = 60.0
SCHEMA_TIMEOUT_S = 5.0
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
BAR_WIDTH = 24

RUN_EPILOG = """\
Where it sends the job (--server, else $FRAMECAST_SERVER, else $FAL_QUEUE_RUN_HOST, else fal):
  --server https://gpu1:8000         a Framecast server: its queue is https://gpu1:8000/queue
  --server https://gpu1:8000/queue   a URL whose path ends in /queue is the queue itself
  --server https://queue.fal.run     fal itself (also the default), used as is
  FAL_QUEUE_RUN_HOST=HOST[:PORT][/PATH] means what it means to fal-client: https://HOST[:PORT][/PATH]
  A server without a scheme gets https://. The key is --key, else $FAL_KEY, else $FRAMECAST_API_KEY
  (sent as 'Authorization: Key ...'). A private CA: --ca-file, or SSL_CERT_FILE as for fal-client.

Images: a local file is sent inline as a data: URI (fal and every Framecast server take them);
http(s) and data: URLs pass through. The field that gets the image is read from the endpoint's
input schema (GET /api/openapi/queue/openapi.json?endpoint_id=..., fal.ai's for fal) when it can
be fetched: the first of image_url, start_image_url, first_image_url, input_image_url, image,
start_image that it has (--end-image: end_image_url, last_image_url, tail_image_url, end_image,
last_image). Without the schema: image_url and end_image_url. --image-field/--end-image-field
name the fields yourself.

--param k=v sets any input field; the value is JSON when it parses as JSON (42, 2.5, true, null,
[1,2], "quoted") and a string otherwise (480p). Params are applied last, so they win.

Progress (the queue position, then a bar with step/total and the ETA from the status'
`progress`) goes to stderr, redrawn in place on a terminal and as plain lines otherwise; the
status is polled every 0.25 s. stdout gets the result JSON, or a failed job's error body.
Ctrl-C cancels the job on the server and waits up to 15 s for it to stop; a second Ctrl-C
quits at once. Exit codes: 0 saved, 1 the job failed or was refused, 2 usage, 3 the server
could not be reached or answered something unexpected, 130 interrupted.
"""


class UsageError(Exception):
    """The arguments cannot make a job; exit 2 with the message."""


class ServerError(Exception):
    """The server could not be reached or answered outside the protocol; exit 3 with the message."""


# --- arguments ---------------------------------------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, Any]:
    """'steps=2' -> ('steps', 2); 'resolution=480p' -> ('resolution', '480p'). JSON when it parses, else text."""
    key, separator, raw = text.partition("=")
    key = key.strip()
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def parse_header(text: str) -> tuple[str, str]:
    """'X-Fal-Queue-Priority: low' -> ('X-Fal-Queue-Priority', 'low'), as curl's -H."""
    name, separator, value = text.partition(":")
    if not separator or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `framecast run` arguments, on the subcommand's parser."""
    parser.add_argument("endpoint", metavar="ENDPOINT", help="The endpoint id, e.g. fal-ai/wan-i2v.")
    parser.add_argument("--image", required=True, metavar="PATH_OR_URL", help="The first frame: a file or a URL.")
    parser.add_argument("--end-image", metavar="PATH_OR_URL", help="The last frame, for endpoints that take one.")
    parser.add_argument("--prompt", help="The text prompt.")
    parser.add_argument(
        "--param",
        action="append",
        type=parse_param,
        default=[],
        metavar="KEY=VALUE",
        help="Any input field, repeatable; the value is parsed as JSON when it can be (see below).",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="VIDEO.mp4", help="Where to save the video.")
    parser.add_argument("--server", metavar="URL", help="The server (see below). Default: fal's queue.")
    parser.add_argument("--key", help="The API key. Default: $FAL_KEY, else $FRAMECAST_API_KEY.")
    parser.add_argument("--ca-file", type=Path, metavar="PEM", help="Trust this CA (default: SSL_CERT_FILE or system).")
    parser.add_argument(
        "--header",
        action="append",
        type=parse_header,
        default=[],
        metavar="NAME:VALUE",
        help="An extra request header for the submit, repeatable (e.g. 'X-Fal-Queue-Priority: low').",
    )
    parser.add_argument("--logs", action="store_true", help="Print the job's log lines as they arrive.")
    parser.add_argument(
        "--json",
        action="store_true",
        help="Machine-readable: stderr gets one JSON object per event instead of the bar, stdout compact JSON.",
    )
    parser.add_argument("--image-field", metavar="NAME", help="The input field for --image (default: see below).")
    parser.add_argument("--end-image-field", metavar="NAME", help="The input field for --end-image.")


def _with_scheme(url: str) -> str:
    return url if "://" in url else "https://" + url


def queue_base_url(server: str | None, environ: Mapping[str, str]) -> str:
    """The queue base that endpoint ids are appended to (no trailing slash).

    `server` (else FRAMECAST_SERVER) is a server root: `/queue` is appended, unless it is fal's
    queue host or its path already ends in `/queue`. Without either, FAL_QUEUE_RUN_HOST is read
    as fal-client reads it (https:// + the value, used as is); without that, fal's queue.
    """
    server = server or environ.get("FRAMECAST_SERVER")
    if not server:
        host = environ.get("FAL_QUEUE_RUN_HOST")
        return _with_scheme(host).rstrip("/") if host else FAL_QUEUE_URL
    url = httpx.URL(_with_scheme(server).rstrip("/"))
    if url.host == "fal.run":
        return FAL_QUEUE_URL
    if url.host in FAL_QUEUE_HOSTS or url.path.endswith("/queue"):
        return str(url).rstrip("/")
    return str(url).rstrip("/") + "/queue"


def api_key(key: str | None, environ: Mapping[str, str]) -> str | None:
    """--key, else FAL_KEY, else FRAMECAST_API_KEY, else fal's FAL_KEY_ID:FAL_KEY_SECRET; None for none."""
    if key:
        return key
    for name in ("FAL_KEY", "FRAMECAST_API_KEY"):
        if environ.get(name):
            return environ[name]
    if environ.get("FAL_KEY_ID") and environ.get("FAL_KEY_SECRET"):
        return f"{environ['FAL_KEY_ID']}:{environ['FAL_KEY_SECRET']}"
    return None


def app_path(endpoint_id: str) -> str:
    """fal's status, result and cancel URLs use only [namespace/]owner/alias (protocol.md §1.1)."""
    parts = endpoint_id.strip("/").split("/")
    keep = 3 if parts[0] in ("workflows", "comfy") else 2
    return "/".join(parts[:keep])


def schema_url(queue_base: str, endpoint_id: str) -> str:
    """Where the endpoint's queue OpenAPI document is: the server root's, or fal.ai's for fal's queue."""
    url = httpx.URL(queue_base)
    root = FAL_SCHEMA_ROOT if url.host in FAL_QUEUE_HOSTS else queue_base.removesuffix("/queue")
    return f"{root}/api/openapi/queue/openapi.json?endpoint_id={quote(endpoint_id, safe='/')}"


def input_properties(document: Any, endpoint_id: str) -> dict[str, Any] | None:
    """The input schema's properties from a fal-layout queue OpenAPI document; None when it has none."""
    try:
        post = document["paths"]["/" + endpoint_id.strip("/")]["post"]
        reference = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        properties = document["components"]["schemas"][reference.rsplit("/", 1)[-1]]["properties"]
    except (KeyError, TypeError, AttributeError):
        return None
    return properties if isinstance(properties, dict) else None


def choose_image_fields(properties: Mapping[str, Any] | None, *, want_end: bool) -> tuple[str, str | None]:
    """(start field, end field or None). Raises `UsageError` when the schema has no such field.

    With the schema's `properties`, the first known name it has wins (START_IMAGE_FIELDS,
    END_IMAGE_FIELDS); without a schema, `image_url` and `end_image_url`.
    """
    if properties is None:
        return START_IMAGE_FIELDS[0], END_IMAGE_FIELDS[0] if want_end else None
    images = ", ".join(name for name in properties if "image" in name) or "none"
    start = next((name for name in START_IMAGE_FIELDS if name in properties), None)
    if start is None:
        raise UsageError(
            f"the endpoint's schema has no known image field (its image fields: {images}); name one with --image-field"
        )
    if not want_end:
        return start, None
    end = next((name for name in END_IMAGE_FIELDS if name in properties), None)
    if end is None:
        raise UsageError(
            f"the endpoint takes no end image (its image fields: {images}); "
            "name a field with --end-image-field if it has one"
        )
    return start, end


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def image_value(path_or_url: str) -> str:
    """http(s) and data: URLs as they are; a local file as a data: URI. Raises `UsageError` for a missing file."""
    if path_or_url.startswith(("http://", "https://", "data:")):
        return path_or_url
    path = Path(path_or_url).expanduser()
    if not path.is_file():
        raise UsageError(f"no such image file: {path_or_url}")
    data = path.read_bytes()
    mime = next((kind for magic, kind in _MAGIC if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    mime = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --- display -----------------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """42 -> '0:42', 3725 -> '1:02:05'; None -> '--:--'."""
    if seconds is None:
        return "--:--"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(progress: Mapping[str, Any], *, since_s: float = 0.0, width: int = BAR_WIDTH) -> str:
    """'[######------------------] 1/4 steps  25%  ETA 0:09' from a status `progress` object.

    `since_s` is how long ago this progress was first seen; the ETA counts down by it.
    """
    step, total = int(progress.get("step") or 0), int(progress.get("total_steps") or 0)
    fraction = min(1.0, max(0.0, step / total)) if total else 0.0
    filled = round(fraction * width)
    eta = progress.get("eta_s")
    eta_s = None if eta is None else max(0.0, float(eta) - since_s)
    bar = "#" * filled + "-" * (width - filled)
    return f"[{bar}] {step}/{total} steps {round(fraction * 100):3d}%  ETA {format_duration(eta_s)}"


def status_line(status: Mapping[str, Any], *, since_s: float = 0.0, elapsed_s: float = 0.0) -> str:
    """The live line for one status body: the queue position, the progress bar, or the elapsed time."""
    state = status.get("status")
    if state == "IN_QUEUE":
        position = status.get("queue_position")
        return "In queue" if position is None else f"In queue: {position} ahead"
    if state == "IN_PROGRESS":
        progress = status.get("progress")
        if isinstance(progress, Mapping) and progress.get("total_steps"):
            return "In progress " + format_progress(progress, since_s=since_s)
        return f"In progress, {format_duration(elapsed_s)} elapsed"
    return "Completed"


def format_log(entry: Mapping[str, Any]) -> str:
    """'12:00:01 INFO  Step 1/2, ETA 0.1s' from a fal log entry."""
    timestamp = str(entry.get("timestamp") or "")
    clock = timestamp[11:19] if len(timestamp) >= 19 else timestamp
    return f"{clock} {entry.get('level') or 'INFO'!s:<5} {entry.get('message', '')}".strip()


@dataclass
class Display:
    """Everything the user sees on stderr: a live line redrawn in place ("tty"), the same as plain lines
    printed only when they change in substance ("plain"), or one JSON object per event ("json")."""

    stream: TextIO
    mode: Literal["tty", "plain", "json"]
    _live: str = ""
    _key: tuple[Any, ...] | None = None
    _progress_key: tuple[Any, ...] | None = None
    _progress_seen_at: float = 0.0
    _running_since: float | None = None
    _seen_logs: set[tuple[str, str, str]] = field(default_factory=set)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _clear(self) -> None:
        if self.mode == "tty" and self._live:
            self._write("\r\x1b[K")

    def note(self, event: str, text: str, /, **fields: Any) -> None:
        """A line of its own (above the live line on a terminal); in JSON mode, the event and its fields."""
        if self.mode == "json":
            self._write(json.dumps({"event": event, **{k: v for k, v in fields.items() if k != "event"}}) + "\n")
            return
        self._clear()
        self._write(text + "\n")
        if self.mode == "tty" and self._live:
            self._write(self._live)

    def status(self, status: Mapping[str, Any]) -> None:
        """One status body: its new log lines, then the live line."""
        for entry in status.get("logs") or []:
            self.log(entry)
        now = time.monotonic()
        state = status.get("status")
        if state == "IN_PROGRESS" and self._running_since is None:
            self._running_since = now
        progress = status.get("progress") if isinstance(status.get("progress"), Mapping) else None
        progress_key = (progress or {}).get("step"), (progress or {}).get("total_steps")
        if progress_key != self._progress_key:
            self._progress_key, self._progress_seen_at = progress_key, now
        key = (state, status.get("queue_position"), *progress_key)
        changed, self._key = key != self._key, key
        if state == "COMPLETED":
            self.finish()
            return
        if self.mode == "json":
            if changed:
                event = "queued" if state == "IN_QUEUE" else "in_progress"
                self._write(
                    json.dumps({"event": event, "queue_position": status.get("queue_position"), "progress": progress})
                    + "\n"
                )
            return
        line = status_line(status, since_s=now - self._progress_seen_at, elapsed_s=now - (self._running_since or now))
        if self.mode == "tty":
            self._live = line
            self._write("\r\x1b[K" + line)
        elif changed:
            self._write(line + "\n")

    def log(self, entry: Mapping[str, Any]) -> None:
        """A server log line, once, however many status bodies repeat it."""
        identity = (str(entry.get("timestamp")), str(entry.get("level")), str(entry.get("message")))
        if identity in self._seen_logs:
            return
        self._seen_logs.add(identity)
        self.note("log", format_log(entry), **dict(entry))

    def finish(self) -> None:
        """Ends the live line."""
        if self.mode == "tty" and self._live:
            self._write("\n")
        self._live = ""


# --- the job -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    request_id: str
    status_url: str
    response_url: str
    cancel_url: str


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:2000]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServerError(
            f"{response.request.url} answered {response.status_code} without JSON: {response.text.strip()[:300]}"
        ) from None


def _same_origin(a: str, b: str) -> bool:
    left, right = httpx.URL(a), httpx.URL(b)
    return (left.scheme, left.host, left.port) == (right.scheme, right.host, right.port)


@dataclass
class Runner:
    """One job's life: submit, follow, fetch the result, save the video; or cancel it."""

    client: httpx.Client
    queue_base: str
    endpoint_id: str
    display: Display
    logs: bool
    auth_headers: dict[str, str]
    # The submitted job, once there is one: what Ctrl-C cancels.
    current: Job | None = None

    def job(self, request_id: str) -> Job:
        # Rebuilt from our own queue base (as fal's JS client does), so a server behind a proxy works
        # even when the URLs it sends point elsewhere.
        response_url = f"{self.queue_base}/{app_path(self.endpoint_id)}/requests/{request_id}"
        return Job(request_id, response_url + "/status", response_url, response_url + "/cancel")

    def fetch_input_properties(self) -> dict[str, Any] | None:
        """The endpoint's input properties, or None when the schema cannot be had (said on stderr)."""
        url = schema_url(self.queue_base, self.endpoint_id)
        headers = self.auth_headers if _same_origin(url, self.queue_base) else {}
        try:
            response = self.client.get(url, headers=headers, timeout=SCHEMA_TIMEOUT_S)
            properties = input_properties(response.json(), self.endpoint_id) if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            properties = None
        if properties is None:
            self.display.note("schema", f"No input schema at {url}; using the usual field names", url=url)
        return properties

    def submit(self, arguments: dict[str, Any], headers: dict[str, str]) -> Job | httpx.Response:
        """The job, or the refusing response (4xx). Raises `ServerError`."""
        url = f"{self.queue_base}/{self.endpoint_id.strip('/')}"
        try:
            response = self.client.post(url, json=arguments, headers={**self.auth_headers, **headers})
        except httpx.HTTPError as error:
            raise ServerError(f"cannot submit to {url}: {error}") from error
        if 400 <= response.status_code < 500 or response.status_code == 503:
            return response
        if response.status_code != 200:
            raise ServerError(f"submit to {url} answered {response.status_code}: {_error_text(response)}")
        body = _json(response)
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
            raise ServerError(f"submit to {url} answered without a request_id: {str(body)[:300]}")
        job = self.current = self.job(body["request_id"])
        self.display.note(
            "submitted",
            f"Submitted {self.endpoint_id}: request {job.request_id}",
            request_id=job.request_id,
            endpoint_id=self.endpoint_id,
            queue_url=self.queue_base,
        )
        return job

    def status(self, job: Job, *, logs: bool) -> dict[str, Any]:
        """One status body. Raises `httpx.HTTPError` or `ServerError`."""
        response = self.client.get(job.status_url, params={"logs": "1" if logs else "0"}, headers=self.auth_headers)
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise httpx.HTTPStatusError(
                f"status answered {response.status_code}", request=response.request, response=response
            )
        if response.status_code not in (200, 202):
            raise ServerError(f"status of {job.request_id} answered {response.status_code}: {_error_text(response)}")
        body = _json(response)
        if not isinstance(body, dict) or body.get("status") not in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
            raise ServerError(f"status of {job.request_id} is not a fal status: {str(body)[:300]}")
        return body

    def follow(self, job: Job) -> dict[str, Any]:
        """Polls until COMPLETED, showing each status; the last status body. Raises `ServerError`.

        Failures of the status call (connection errors, 5xx, 429) are retried for `RETRY_WINDOW_S`.
        """
        failing_since: float | None = None
        while True:
            try:
                status = self.status(job, logs=self.logs)
            except httpx.HTTPError as error:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RETRY_WINDOW_S:
                    raise ServerError(f"status of {job.request_id} kept failing: {error}") from error
                time.sleep(1.0)
                continue
            failing_since = None
            self.display.status(status)
            if status["status"] == "COMPLETED":
                return status
            time.sleep(POLL_INTERVAL_S)

    def result(self, job: Job) -> httpx.Response:
        try:
            return self.client.get(job.response_url, headers=self.auth_headers)
        except httpx.HTTPError as error:
            raise ServerError(f"cannot fetch the result of {job.request_id}: {error}") from error

    def download(self, url: str, out: Path) -> int:
        """Saves `url` (http(s) or data:) to `out` through a `.part` file; the size. Raises `ServerError`.

        The key is sent only to the queue's own origin, never to a CDN (fal's outputs live on one).
        """
        partial = out.with_name(out.name + ".part")
        try:
            if url.startswith("data:"):
                partial.write_bytes(base64.b64decode(url.partition(",")[2], validate=True))
            else:
                headers = self.auth_headers if _same_origin(url, self.queue_base) else {}
                # httpx drops the Authorization header on a redirect to another origin.
                with self.client.stream("GET", url, headers=headers, follow_redirects=True) as response:
                    if response.status_code != 200:
                        raise ServerError(f"downloading {url} answered {response.status_code}")
                    with partial.open("wb") as file:
                        for chunk in response.iter_bytes():
                            file.write(chunk)
            partial.replace(out)
        except (httpx.HTTPError, OSError, binascii.Error) as error:
            raise ServerError(f"cannot save {url} to {out}: {error}") from error
        finally:
            partial.unlink(missing_ok=True)
        return out.stat().st_size

    def cancel(self, job: Job) -> str:
        """Cancels the job on the server and waits up to `CANCEL_WAIT_S` for it to stop; what happened, in words.

        The "waiting" line is printed only once the server has the cancel request.
        """
        self.display.note("cancelling", f"Cancelling {job.request_id} on the server...", request_id=job.request_id)
        try:
            response = self.client.put(job.cancel_url, headers=self.auth_headers)
        except httpx.HTTPError as error:
            return f"Could not reach the server to cancel {job.request_id}: {error}"
        if response.status_code == 400:
            return f"{job.request_id} had already finished; its result is at {job.response_url}"
        if response.status_code >= 300:
            return f"Cancel of {job.request_id} answered {response.status_code}: {_error_text(response)}"
        self.display.note(
            "cancel_requested",
            f"Cancel requested; waiting up to {CANCEL_WAIT_S:.0f}s for it to stop (Ctrl-C again to quit at once)",
            request_id=job.request_id,
        )
        deadline = time.monotonic() + CANCEL_WAIT_S
        while time.monotonic() < deadline:
            try:
                status = self.status(job, logs=False)
            except (httpx.HTTPError, ServerError):
                status = {}
            if status.get("status") == "COMPLETED":
                if status.get("error_type") == "client_cancelled":
                    return f"Cancelled {job.request_id} on the server."
                if status.get("error_type") is None:
                    return (
                        f"{job.request_id} finished before the cancel took effect; its result is at {job.response_url}"
                    )
                return f"{job.request_id} ended with {status.get('error_type')}: {status.get('error')}"
            time.sleep(POLL_INTERVAL_S)
        return f"Cancel of {job.request_id} requested; the server has not confirmed it yet."


@contextmanager
def second_interrupt_exits(stream: TextIO) -> Iterator[None]:
    """While inside, Ctrl-C ends the process at once with 130."""

    def exit_now(_signum: int, _frame: FrameType | None) -> None:
        stream.write("\nInterrupted again: quitting without waiting.\n")
        stream.flush()
        os._exit(EXIT_INTERRUPTED)

    previous = signal.signal(signal.SIGINT, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def build_input(
    arguments: argparse.Namespace, fields: tuple[str, str | None], images: tuple[str, str | None]
) -> dict[str, Any]:
    """The model input: the images (values from `image_value`) in their fields, the prompt, then every
    --param, which win."""
    body: dict[str, Any] = {}
    for name, value in zip(fields, images, strict=True):
        if name is not None and value is not None:
            body[name] = value
    if arguments.prompt is not None:
        body["prompt"] = arguments.prompt
    body.update(dict(arguments.param))
    return body


def make_client(ca_file: Path | None) -> httpx.Client:
    """An httpx client that trusts --ca-file, else SSL_CERT_FILE/SSL_CERT_DIR (trust_env), else the default CAs."""
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
    return httpx.Client(verify=verify, trust_env=True, timeout=TIMEOUT, headers={"User-Agent": "framecast-run"})


def run(arguments: argparse.Namespace, *, environ: Mapping[str, str] | None = None) -> int:
    """`framecast run`: the exit code (module docstring). stdout gets only the result or error JSON."""
    environ = os.environ if environ is None else environ
    stderr = sys.stderr
    if not arguments.out.parent.is_dir():
        print(f"framecast run: the directory of --out does not exist: {arguments.out.parent}", file=stderr)
        return EXIT_USAGE
    if arguments.ca_file is not None and not arguments.ca_file.is_file():
        print(f"framecast run: no such CA file: {arguments.ca_file}", file=stderr)
        return EXIT_USAGE
    mode: Literal["tty", "plain", "json"] = "json" if arguments.json else "tty" if stderr.isatty() else "plain"
    display = Display(stderr, mode)
    key = api_key(arguments.key, environ)
    auth_headers = {"Authorization": f"Key {key}"} if key else {}
    # Ctrl-C must raise KeyboardInterrupt even when a parent shell started us with SIGINT ignored.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with make_client(arguments.ca_file) as client:
            queue_base = queue_base_url(arguments.server, environ)
            runner = Runner(client, queue_base, arguments.endpoint.strip("/"), display, arguments.logs, auth_headers)
            return run_or_cancel(runner, arguments)
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def run_or_cancel(runner: Runner, arguments: argparse.Namespace) -> int:
    """`run_job`, with its errors as exit codes; Ctrl-C cancels the submitted job on the server."""
    display, stderr = runner.display, runner.display.stream
    try:
        return run_job(runner, arguments)
    except UsageError as error:
        display.finish()
        print(f"framecast run: {error}", file=stderr)
        return EXIT_USAGE
    except ServerError as error:
        display.finish()
        print(f"framecast run: {error}", file=stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        display.finish()
        if runner.current is None:
            display.note("interrupted", "Interrupted before a request id came back: nothing to cancel.")
            return EXIT_INTERRUPTED
        with second_interrupt_exits(stderr):
            outcome = runner.cancel(runner.current)
        display.note("cancelled", outcome, request_id=runner.current.request_id)
        return EXIT_INTERRUPTED


def run_job(runner: Runner, arguments: argparse.Namespace) -> int:
    """Pick the image fields, submit, follow, print the result and save the video; the exit code.

    Raises `UsageError`, `ServerError` and `KeyboardInterrupt` (with `runner.current` set once submitted).
    """
    display, indent = runner.display, None if arguments.json else 2
    images = image_value(arguments.image), None if arguments.end_image is None else image_value(arguments.end_image)
    want_end = arguments.end_image is not None
    needs_schema = arguments.image_field is None or (want_end and arguments.end_image_field is None)
    start, end = choose_image_fields(runner.fetch_input_properties() if needs_schema else None, want_end=want_end)
    fields = (arguments.image_field or start, (arguments.end_image_field or end) if want_end else None)
    submitted = runner.submit(build_input(arguments, fields, images), dict(arguments.header))
    if isinstance(submitted, httpx.Response):
        print(json.dumps(_body_or_text(submitted), indent=indent))
        message = f"Refused ({submitted.status_code}): {_error_text(submitted)}"
        display.note("refused", message, status_code=submitted.status_code)
        return EXIT_FAILED
    final = runner.follow(submitted)
    response = runner.result(submitted)
    body = _body_or_text(response)
    print(json.dumps(body, indent=indent), flush=True)
    if response.status_code != 200:
        error_type = final.get("error_type") or response.headers.get("x-fal-error-type")
        message = f"Failed ({response.status_code}{', ' + error_type if error_type else ''}): {_error_text(response)}"
        display.note("failed", message, status_code=response.status_code, error_type=error_type)
        return EXIT_FAILED
    inference_time = (final.get("metrics") or {}).get("inference_time")
    took = f" in {inference_time:.1f}s" if isinstance(inference_time, (int, float)) else ""
    display.note("completed", f"Completed{took}", request_id=submitted.request_id, inference_time=inference_time)
    video = body.get("video") if isinstance(body, dict) else None
    url = video.get("url") if isinstance(video, dict) else None
    if not isinstance(url, str):
        display.note("error", "The result has no video.url to save")
        return EXIT_ERROR
    size = runner.download(url, arguments.out)
    display.note("saved", f"Saved {arguments.out} ({size} bytes)", path=str(arguments.out), bytes=size)
    return EXIT_OK


def _body_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"status_code": response.status_code, "body": response.text}
