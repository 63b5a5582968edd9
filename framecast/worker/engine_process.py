"""The engine process: the only process that imports torch.

The worker starts it once; it loads every engine of the worker's bindings, then
runs one job at a time on request. Cancellation is a signal (SIGUSR1), as in
cog: the handler only sets a flag, and the progress callback raises
`GenerationCancelled` at the next denoising step. Messages go over a pipe as
plain dicts.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

from framecast.bindings import ModelBinding
from framecast.engines.base import (
    Engine,
    EngineError,
    Frames,
    GenerationCancelled,
    GenerationRequest,
    Progress,
    Section,
)
from framecast.engines.safety import SafetyChecker, load_safety_checker
from framecast.logs import LogFormat, bind_worker_id, configure_logging, log_context
from framecast.worker.linux import die_with_parent

# Test-only faults (`--test-faults`): "raise_at_step=N", "exit_at_step=N", "block_at_step=N",
# "block_once_at_step=N" (first attempt only) and "ignore_cancel_at_step=N".
FAULT_BLOCK_LIMIT_S = 300.0


# Lines in the worker's log format (configure_engine_logging); what users see goes over the pipe instead.
logger = logging.getLogger("framecast.engine")

# Previews are watched, not kept: a faster, lossier encode than the result's.
PREVIEW_CRF = 26
# A job's last message. The worker reads nothing more until the next job, so the memory report goes first.
JOB_END_TYPES = frozenset({"done", "failed", "cancelled"})


class EngineHost:
    def __init__(
        self,
        connection: Connection,
        bindings: list[ModelBinding],
        max_image_pixels: int,
        safety_checker: str | None = None,
    ) -> None:
        self.connection = connection
        self.bindings = {binding.endpoint_id: binding for binding in bindings}
        self.max_image_pixels = max_image_pixels
        self.safety_checker_spec = safety_checker
        self.safety_checker: SafetyChecker | None = None
        self.engines: dict[str, Engine] = {}
        self.cancelled = False
        # A context-parallel engine's monitor thread may log a broken group while this thread sends progress.
        self.send_lock = threading.Lock()

    def on_cancel_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.cancelled = True

    def send(self, message: dict[str, Any]) -> None:
        with self.send_lock:
            if message["type"] in JOB_END_TYPES:
                self.connection.send(resources_message())
            self.connection.send(message)

    def load(self) -> dict[str, str]:
        """Load every binding's engine; returns endpoint_id -> reason for those that failed.

        Bindings fail one by one: a broken one does not take the others down.
        """
        from framecast.engines.factory import build_engine

        failures: dict[str, str] = {}
        if self.safety_checker_spec:
            try:
                self.safety_checker = load_safety_checker(self.safety_checker_spec)
            except Exception as error:
                # Serving without the checker the operator asked for would be silently unsafe.
                logger.exception("the safety checker %s could not be loaded", self.safety_checker_spec)
                reason = f"the safety checker could not be loaded: {describe_error(error)}"
                return {endpoint_id: reason for endpoint_id in self.bindings}
        # One engine object per distinct binding (less the endpoint): endpoints may share a loaded model.
        shared: dict[str, Engine | str] = {}
        for endpoint_id, binding in self.bindings.items():
            identity = json.dumps({**asdict(binding), "endpoint_id": None}, sort_keys=True, default=str)
            if identity not in shared:
                started = time.monotonic()
                try:
                    engine = build_engine(binding)
                    engine.load()
                except Exception as error:
                    logger.exception("%s could not be loaded from %s", binding.engine, binding.weights)
                    shared[identity] = describe_error(error)
                else:
                    shared[identity] = engine
                    self.send(
                        {
                            "type": "log",
                            "level": "INFO",
                            "message": f"Loaded {binding.engine} from {binding.weights} on {binding.device} "
                            f"in {time.monotonic() - started:.1f}s",
                        }
                    )
            loaded = shared[identity]
            if isinstance(loaded, str):
                failures[endpoint_id] = loaded
            else:
                self.engines[endpoint_id] = loaded
        return failures

    def run(self, message: dict[str, Any]) -> None:
        from framecast.inputs.images import load_image

        self.cancelled = False
        endpoint_id = message["endpoint_id"]
        binding = self.bindings[endpoint_id]
        engine = self.engines[endpoint_id]
        generation = dict(message["generation"])
        num_frames = int(generation["num_frames"])
        images = {
            role: load_image(data, max_image_pixels=self.max_image_pixels) for role, data in message["images"].items()
        }
        if "image" not in images:
            # A mapped endpoint (e.g. Luma with only an end frame) can reach an engine that needs a first frame.
            error = f"{binding.engine} needs a first frame; this request gives only: {', '.join(images) or 'none'}"
            self.send({"type": "failed", "error": error, "error_type": "unprocessable_entity", "status_code": 422})
            return
        request = GenerationRequest(image=images["image"], last_image=images.get("last_image"), **generation)
        fault = parse_fault(message.get("test_fault"), attempt=int(message.get("attempt", 1)))
        output_path = Path(message["output_path"])
        started = time.monotonic()

        def on_progress(progress: Progress) -> None:
            self.send(
                {
                    "type": "progress",
                    "step": progress.step,
                    "total_steps": progress.total_steps,
                    "elapsed_s": progress.elapsed_s,
                    "eta_s": progress.eta_s,
                }
            )
            if fault is not None and fault[1] == progress.step:
                self.apply_fault(fault[0], progress.step)
            if self.cancelled:
                raise GenerationCancelled()

        def log(line: str, level: str = "INFO") -> None:
            self.send({"type": "log", "level": level, "message": line})

        def on_section(section: Section) -> None:
            path = output_path.with_name(f"{output_path.stem}-section{section.index}.mp4")
            self.encode(section.frames, section.frames_per_second, path, crf=PREVIEW_CRF)
            self.send({"type": "preview", "path": str(path), **section_facts(section)})

        try:
            result = engine.generate(request, on_progress, log, on_section)
            frames = result.frames[:num_frames]
            if len(frames) < num_frames:
                log(f"The model returned {len(frames)} frames; {num_frames} were asked for")
            verdict = self.check_safety(request, frames, log)
            if verdict is not None:
                self.send({"type": "failed", "status_code": 422, "error_type": "content_policy_violation", **verdict})
                return
            encode_started = time.monotonic()
            self.encode(frames, result.frames_per_second, output_path)
            self.send(
                {
                    "type": "done",
                    "output_path": str(output_path),
                    "seed": result.seed,
                    "model": result.model,
                    "engine": binding.engine,
                    "render_scale": binding.render_scale,
                    "num_frames": int(frames.shape[0]),
                    "width": int(frames.shape[2]),
                    "height": int(frames.shape[1]),
                    "frames_per_second": result.frames_per_second,
                    "inference_time_s": encode_started - started,
                    "encode_time_s": time.monotonic() - encode_started,
                }
            )
        except GenerationCancelled as cancelled:
            reply: dict[str, Any] = {"type": "cancelled"}
            if cancelled.partial is not None:
                # What was finished is kept: the user paid for it, and it shows where the video was going.
                self.encode(cancelled.partial.frames, cancelled.partial.frames_per_second, output_path)
                reply["partial"] = {"output_path": str(output_path), **section_facts(cancelled.partial)}
            self.send(reply)
        except EngineError as error:
            self.send(
                {
                    "type": "failed",
                    "error": str(error),
                    "error_type": error.error_type,
                    "status_code": error.status_code,
                }
            )
        except Exception as error:
            logger.exception("the model failed")
            self.send(
                {
                    "type": "failed",
                    "error": describe_error(error),
                    "error_type": "internal_server_error",
                    "status_code": 500,
                }
            )

    @staticmethod
    def encode(frames: Frames, frames_per_second: int, path: Path, crf: int = 18) -> None:
        from framecast.engines.video import encode_mp4

        encode_mp4(frames, frames_per_second=frames_per_second, path=path, crf=crf)

    def check_safety(
        self, request: GenerationRequest, frames: Frames, log: Callable[[str, str], None]
    ) -> dict[str, str] | None:
        """None to go on; otherwise the failure's error fields. Never claims a check that did not run."""
        if not request.options.get("enable_safety_checker"):
            return None
        if self.safety_checker is None:
            log(
                "enable_safety_checker=true, but this server has no safety checker configured "
                "(--safety-checker); the output was NOT checked",
                "WARN",
            )
            return None
        verdict = self.safety_checker.check(frames, request.prompt)
        if verdict.flagged:
            reason = verdict.reason or "no reason given"
            return {"error": f"The safety checker {self.safety_checker.name} flagged the output: {reason}"}
        log(f"Safety checker {self.safety_checker.name}: passed", "INFO")
        return None

    def apply_fault(self, kind: str, step: int) -> None:
        if kind == "raise":
            raise EngineError(f"Injected test fault at step {step}", error_type="internal_server_error")
        if kind == "exit":
            os._exit(3)
        if kind in ("block", "ignore_cancel"):
            self.send({"type": "log", "level": "INFO", "message": f"Test fault: holding at step {step}"})
            deadline = time.monotonic() + FAULT_BLOCK_LIMIT_S
            while time.monotonic() < deadline and (kind == "ignore_cancel" or not self.cancelled):
                time.sleep(0.02)


def parse_fault(spec: str | None, *, attempt: int) -> tuple[str, int] | None:
    """'block_at_step=2' -> ("block", 2). `*_once_*` faults fire on the first attempt only."""
    if not spec or "=" not in spec:
        return None
    name, _, value = spec.partition("=")
    kind = name.removesuffix("_at_step")
    if kind.endswith("_once"):
        if attempt > 1:
            return None
        kind = kind.removesuffix("_once")
    if kind not in ("raise", "exit", "block", "ignore_cancel") or not value.isdigit():
        return None
    return kind, int(value)


def engine_process_main(
    connection: Connection,
    bindings: list[dict[str, Any]],
    max_image_pixels: int,
    parent_pid: int,
    torch_threads: int | None = None,
    safety_checker: str | None = None,
    *,
    log_level: str = "info",
    log_format: LogFormat = "text",
    worker_id: str | None = None,
) -> None:
    """Entry point of the spawned engine process."""
    die_with_parent(parent_pid)
    configure_engine_logging(log_level, log_format)
    if worker_id is not None:
        bind_worker_id(worker_id)
    if torch_threads is not None:
        import torch

        # Several engine processes on one CPU thrash each other's caches with torch's default thread count.
        torch.set_num_threads(torch_threads)
    # Ctrl-C in a terminal reaches the whole process group; the worker decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    host = EngineHost(connection, [ModelBinding(**binding) for binding in bindings], max_image_pixels, safety_checker)
    signal.signal(signal.SIGUSR1, host.on_cancel_signal)
    failures = host.load()
    connection.send(resources_message())
    connection.send({"type": "ready", "endpoints": sorted(host.engines), "failures": failures})
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message.get("type") == "run":
            with log_context(request_id=message.get("request_id")):
                host.run(message)
        elif message.get("type") == "stop":
            return


def configure_engine_logging(level: str, log_format: LogFormat) -> None:
    """Log as the worker does, the model libraries included.

    Their progress bars go: redrawn with carriage returns, they would break lines of the log (JSON ones
    above all). transformers' and diffusers' own stderr handlers give way to the root one.
    """
    configure_logging(level, log_format)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for library in ("transformers", "diffusers"):
        try:
            library_logging = importlib.import_module(f"{library}.utils.logging")
        except ImportError:
            continue
        library_logging.disable_progress_bar()
        library_logging.disable_default_handler()
        library_logging.enable_propagation()


def resources_message() -> dict[str, Any]:
    """The GPU memory this process holds, for the worker's heartbeat (the framecast_gpu_memory_* metrics)."""
    return {"type": "resources", "devices": device_memory()}


def device_memory() -> list[dict[str, Any]]:
    """Each CUDA device this process's caching allocator has used: allocated, reserved and total bytes.

    Empty on CPU, and before torch is imported. Never creates a CUDA context to look (a context costs
    hundreds of MiB on every device it touches).
    """
    torch = sys.modules.get("torch")
    try:
        if torch is None or not torch.cuda.is_initialized():
            return []
        devices = []
        for index in range(torch.cuda.device_count()):
            reserved = int(torch.cuda.memory_reserved(index))
            if reserved == 0:
                continue
            devices.append(
                {
                    "device": f"cuda:{index}",
                    "allocated_bytes": int(torch.cuda.memory_allocated(index)),
                    "reserved_bytes": reserved,
                    "total_bytes": int(torch.cuda.get_device_properties(index).total_memory),
                }
            )
        return devices
    except Exception:
        # A metric must never fail a job.
        return []


def section_facts(section: Section) -> dict[str, Any]:
    return {
        "section": section.index,
        "sections": section.total,
        "num_frames": int(section.frames.shape[0]),
        "placement": section.placement,
    }


def describe_error(error: Exception) -> str:
    """An engine's own errors are written for users; anything else gets its type named."""
    return str(error) if isinstance(error, EngineError) else f"{type(error).__name__}: {error}"


def binding_payload(binding: ModelBinding) -> dict[str, Any]:
    return asdict(binding)
