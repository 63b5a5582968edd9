"""Several devices for one job: Wan with diffusers' context parallelism (Ulysses) across processes.

A binding with `options.context_parallel.devices = [d0, d1, ...]` runs every job on all of those
devices at once. The engine process is rank 0 on d0 and spawns one follower process per other
device. Every rank loads the same weights and, for each job, runs the same pipeline call with the
same seed; diffusers' context-parallel hooks split the transformer's video tokens across the ranks
and Ulysses attention trades attention heads for tokens (all-to-all), so each rank computes 1/N of
every block. Only rank 0 reports progress and returns frames; the followers' copies are dropped.

Why the ranks cannot deadlock:
- A job reaches the followers over a pipe each, not through a collective: an idle follower waits
  in `recv`, which has no timeout, where a waiting collective would hit the group's timeout.
- After every denoising step rank 0 broadcasts one verdict (go on, cancel, abort) and every rank
  acts on it, so all ranks leave the denoising loop at the same step.
- After every job each follower reports how it ended. A rank that stopped inside a step (between
  two of the transformer's collectives) may have left its peers waiting, so the group is unusable;
  so is a group with a dead follower. Rank 0 then calls `on_group_failure`: in the engine process
  that logs the reason to the job and exits, the worker fails the job and restarts the engine
  process, and the followers die with it (they are its daemonic children and ask the kernel to
  kill them when it dies).

Only the worker's engine process imports this module: it imports torch.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist

# torch.distributed re-exports these without declaring them, which mypy --strict rejects.
from torch._C._distributed_c10d import Store, TCPStore

from framecast.bindings import ModelBinding
from framecast.engines.base import (
    EngineError,
    GenerationCancelled,
    GenerationRequest,
    GenerationResult,
    LogCallback,
    Progress,
    ProgressCallback,
    SectionCallback,
)
from framecast.engines.diffusers_engine import DiffusersEngine, scaled_size
from framecast.engines.names import ContextParallelOptions
from framecast.engines.wan import valid_num_frames
from framecast.worker.linux import die_with_parent

# Rendezvous stays on this machine: every rank is a child of the engine process.
RENDEZVOUS_HOST = "127.0.0.1"
# A collective waits at most this long for a peer. Peers only ever wait for each other's share of a step, and a
# dead peer is noticed by the monitor thread long before, so this only bounds a hang nothing else caught.
COLLECTIVE_TIMEOUT_S = 30 * 60.0
# How long after rank 0 finished a job the followers may take to report theirs (they decode the same video).
OUTCOME_TIMEOUT_S = 60.0
# The engine process's exit status when its group broke (EX_SOFTWARE); the worker restarts it.
GROUP_FAILED_EXIT_CODE = 70

# Rank 0's verdict after each step, broadcast to every rank.
GO_ON, CANCEL, ABORT = 0, 1, 2


class ContextParallelGroupFailed(EngineError):
    """A follower died or the ranks fell out of step: the group cannot run another job."""


class StepAborted(Exception):
    """A follower's side of an abort: rank 0's progress callback raised something other than a cancel."""


@dataclass(frozen=True)
class RankOutcome:
    """How one rank's job ended."""

    kind: Literal["done", "cancelled", "error"]
    # False when the rank stopped inside a step: its peers may be waiting in a collective it will never join.
    clean: bool = True
    error: str = ""


class ForwardCounter:
    """Denoiser forwards since the last step agreement (a forward pre-hook on every denoiser)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, *_: Any) -> None:
        self.count += 1


class StepAgreement:
    """Every rank's progress callback: rank 0 decides at each step boundary, every rank follows.

    On rank 0 `on_progress` is the job's callback; whatever it raises (a cancel, an injected
    fault) becomes the verdict that all ranks act on at this same step. Followers pass None.
    """

    def __init__(self, on_progress: ProgressCallback | None, counter: ForwardCounter) -> None:
        self.on_progress = on_progress
        self.counter = counter

    def __call__(self, progress: Progress) -> None:
        verdict = GO_ON
        raised: Exception | None = None
        if self.on_progress is not None:
            try:
                self.on_progress(progress)
            except GenerationCancelled as error:
                verdict, raised = CANCEL, error
            except Exception as error:
                verdict, raised = ABORT, error
        # A host tensor: on GPUs the group sends it over gloo, so the verdict never waits behind GPU work.
        flag = torch.tensor([verdict], dtype=torch.int64)
        dist.broadcast(flag, src=0)
        self.counter.count = 0
        if raised is not None:
            raise raised
        if int(flag.item()) == CANCEL:
            raise GenerationCancelled()
        if int(flag.item()) == ABORT:
            raise StepAborted("rank 0 stopped the job at this step")


def run_rank(
    engine: DiffusersEngine,
    counter: ForwardCounter,
    request: GenerationRequest,
    on_progress: ProgressCallback | None,
    log: LogCallback,
    on_section: SectionCallback | None,
) -> tuple[GenerationResult | None, BaseException | None, RankOutcome]:
    """One rank's share of a job: (result, what it raised, how it ended). Never raises an Exception."""
    counter.count = 0
    try:
        result = engine.generate(request, StepAgreement(on_progress, counter), log, on_section)
    except GenerationCancelled as cancelled:
        return None, cancelled, RankOutcome("cancelled", clean=counter.count == 0)
    except Exception as error:
        return None, error, RankOutcome("error", clean=counter.count == 0, error=describe_error(error))
    return result, None, RankOutcome("done")


def ignore_log(message: str, level: str = "INFO", /) -> None:
    """A follower's log: rank 0 logs the job."""


def describe_error(error: BaseException) -> str:
    return str(error) if isinstance(error, EngineError) else f"{type(error).__name__}: {error}"


def describe_exit(process: BaseProcess) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is None:
        return "stopped answering"
    if code < 0:
        return f"was killed by signal {signal.Signals(-code).name}"
    return f"exited with code {code}"


# -- the process group ----------------------------------------------------------------------------


def backend_for(device: torch.device) -> str:
    # GPUs: NCCL for the transformer's tensors; gloo for host objects (the step verdict), which then never
    # wait behind GPU work. CPU ranks (tests): gloo for everything.
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def join_group(store: Store, rank: int, world_size: int, device: torch.device) -> None:
    """Join the default process group as `rank`, pinned to `device` (one GPU per rank)."""
    if device.type == "cuda":
        # Before the group exists, so that NCCL and diffusers' device mesh bind this rank to its own GPU.
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device),
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        device_id=device if device.type == "cuda" else None,
    )


@contextmanager
def cpu_device_count_workaround(device: torch.device) -> Iterator[None]:
    """Count one accelerator while diffusers enables parallelism on CPU ranks.

    diffusers 0.42 computes `rank % torch.accelerator.device_count()` in `enable_parallelism`, a
    ZeroDivisionError on a machine without an accelerator. The result only names a device it never
    uses, so for CPU ranks (tests) the count reads 1 during that call; GPU ranks are left alone.
    """
    if device.type != "cpu" or torch.accelerator.device_count() > 0:
        yield
        return
    accelerator: Any = torch.accelerator
    device_count = accelerator.device_count
    accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        accelerator.device_count = device_count


def check_degree(engine: DiffusersEngine, world_size: int) -> None:
    """Raises `EngineError` unless Ulysses can split every denoiser's attention heads across `world_size` ranks."""
    for model in engine.denoisers(engine.pipeline):
        heads = int(model.config.num_attention_heads)
        if heads % world_size:
            divisors = [str(n) for n in range(2, heads + 1) if heads % n == 0]
            raise EngineError(
                f"context_parallel: Ulysses splits the {heads} attention heads of {engine.weights!r} evenly across "
                f"the devices, and {world_size} devices do not divide {heads}; use {', '.join(divisors)} devices"
            )


def enable_context_parallel(
    engine: DiffusersEngine, device: torch.device, world_size: int, counter: ForwardCounter
) -> None:
    """Ulysses on every denoiser of `engine` (on `device`) across the group: a collective, every rank calls it."""
    from diffusers import ContextParallelConfig

    with cpu_device_count_workaround(device):
        for model in engine.denoisers(engine.pipeline):
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world_size))  # type: ignore[no-untyped-call]
            model.register_forward_pre_hook(counter)


def video_tokens(pipe: Any, width: int, height: int, num_frames: int) -> int:
    """The sequence length of a Wan transformer for a render of width x height pixels and `num_frames` frames."""
    transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    patch_frames, patch_height, patch_width = transformer.config.patch_size
    latent_frames = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    spatial = pipe.vae_scale_factor_spatial
    return int(
        (latent_frames // patch_frames) * (height // spatial // patch_height) * (width // spatial // patch_width)
    )


# -- follower ranks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FollowerSpec:
    """What a follower needs to start: its binding (its own device), its rank, and where to meet rank 0."""

    binding: ModelBinding
    rank: int
    world_size: int
    store_port: int
    parent_pid: int
    torch_threads: int


def build_rank_engine(binding: ModelBinding, device: str) -> DiffusersEngine:
    """The single-device engine of one rank. Raises `EngineError`."""
    from framecast.engines.factory import build_engine

    engine = build_engine(binding, rank_device=device)
    if not isinstance(engine, DiffusersEngine):
        raise EngineError(f"context_parallel: {binding.engine} is not a diffusers engine")
    return engine


def follower_main(spec: FollowerSpec, connection: Connection) -> None:
    """Entry point of a follower rank: load, join the group, then run each job rank 0 sends until told to stop.

    Reports {"type": "loaded"} or {"type": "failed", "error"} after loading, {"type": "ready"} once in
    the group, and {"type": "outcome", "job", "outcome": RankOutcome} after every job.
    """
    die_with_parent(spec.parent_pid)
    # Ctrl-C in a terminal reaches the whole process group; rank 0 decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(spec.torch_threads)
    try:
        engine = build_rank_engine(spec.binding, spec.binding.device)
        engine.load()
    except Exception as error:
        connection.send({"type": "failed", "error": describe_error(error)})
        return
    connection.send({"type": "loaded"})
    device = torch.device(spec.binding.device)
    store = TCPStore(
        RENDEZVOUS_HOST,
        spec.store_port,
        spec.world_size,
        is_master=False,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    join_group(store, spec.rank, spec.world_size, device)
    counter = ForwardCounter()
    enable_context_parallel(engine, device, spec.world_size, counter)
    connection.send({"type": "ready"})
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            break
        if message.get("type") != "run":
            break
        _, _, outcome = run_rank(engine, counter, message["request"], None, ignore_log, None)
        connection.send({"type": "outcome", "job": message["job"], "outcome": outcome})
    dist.destroy_process_group()


@dataclass
class Follower:
    rank: int
    device: str
    process: BaseProcess
    connection: Connection

    def describe(self) -> str:
        return f"rank {self.rank} on {self.device} (pid {self.process.pid})"


def exit_engine_process(reason: str) -> None:
    """The engine process's answer to a broken group: exit, so that the worker restarts every rank."""
    print(f"framecast engine: {reason}", file=sys.stderr, flush=True)
    os._exit(GROUP_FAILED_EXIT_CODE)


# -- rank 0 ---------------------------------------------------------------------------------------


class ContextParallelEngine:
    """One binding's engine on several devices: rank 0 in this process, a follower process per other device.

    `binding.options["context_parallel"]["devices"]` lists the devices, rank 0's first. Loading
    starts the followers, loads the weights on every rank and enables Ulysses on the denoisers;
    `generate` has the `Engine` contract and the single-device engine's results (identical frames
    for the same request and seed). One per process: torch.distributed has one default group.

    `on_group_failure(reason)` is called, once, when a follower dies or the ranks fall out of step
    (from a monitor thread or from `generate`). The default, for the engine process, exits with
    `GROUP_FAILED_EXIT_CODE`. If it returns (tests), the followers are stopped and every later
    `generate` raises `ContextParallelGroupFailed`.

    Not thread-safe: run one `generate` at a time.
    """

    name: ClassVar[str] = "context-parallel"

    def __init__(
        self,
        binding: ModelBinding,
        *,
        on_group_failure: Callable[[str], None] = exit_engine_process,
        outcome_timeout_s: float = OUTCOME_TIMEOUT_S,
    ) -> None:
        """Check the settings; nothing starts until `load`. Raises `EngineError` for invalid options."""
        raw = binding.options.get("context_parallel")
        try:
            self.devices = ContextParallelOptions.model_validate(raw).devices
        except ValueError as error:
            raise EngineError(f"invalid options.context_parallel for {binding.endpoint_id}: {error}") from error
        self.binding = binding
        self.rank_engine = build_rank_engine(binding, self.devices[0])
        self.on_group_failure = on_group_failure
        self.outcome_timeout_s = outcome_timeout_s
        self.followers: list[Follower] = []
        self._counter = ForwardCounter()
        self._store: TCPStore | None = None
        self._ready = False
        self._closing = False
        self._closed = False
        self._failure: str | None = None
        self._failure_lock = threading.Lock()
        self._job = 0
        self._job_log: LogCallback | None = None
        self._wake_monitor: Connection | None = None

    @property
    def world_size(self) -> int:
        return len(self.devices)

    @property
    def pipeline(self) -> Any:
        """Rank 0's pipeline (for diagnostics and tests)."""
        return self.rank_engine.pipeline

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the followers and load the model on every rank; a second call does nothing.

        Raises:
            EngineError: a device that is missing, a rank that cannot load the weights (with its
                reason), a device count that does not divide the attention heads, or a second
                context-parallel engine in this process.
        """
        if self._ready:
            return
        if self._closing or self._failure is not None:
            raise ContextParallelGroupFailed(
                self._failure or f"{self.binding.endpoint_id}: the engine was closed or failed to load"
            )
        if dist.is_initialized():
            raise EngineError(
                f"{self.binding.endpoint_id}: another context-parallel binding already runs in this worker, and one "
                "process has one process group; serve it from another worker (--endpoints)"
            )
        self.check_devices()
        # Port 0: the store picks a free port itself, so there is no window for another process to take it.
        store = TCPStore(
            RENDEZVOUS_HOST,
            0,
            self.world_size,
            is_master=True,
            wait_for_workers=False,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
        self.start_followers(store.port)
        try:
            self.rank_engine.load()
            check_degree(self.rank_engine, self.world_size)
            self.await_followers("loaded")
            # From here a dead follower could leave rank 0 waiting in a collective (or NCCL's rendezvous): watch.
            reader, self._wake_monitor = multiprocessing.Pipe(duplex=False)
            threading.Thread(
                target=self.watch_followers, args=(reader,), name="framecast-ranks-monitor", daemon=True
            ).start()
            device = torch.device(self.devices[0])
            join_group(store, 0, self.world_size, device)
            enable_context_parallel(self.rank_engine, device, self.world_size, self._counter)
            self.await_followers("ready")
        except BaseException:
            self.stop_followers()
            if dist.is_initialized():
                dist.destroy_process_group()
            raise
        self._store = store
        self._ready = True

    def check_devices(self) -> None:
        gpus = [torch.device(device) for device in self.devices if device != "cpu"]
        if not gpus:
            return
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        missing = [str(device) for device in gpus if device.index is None or device.index >= available]
        if missing:
            raise EngineError(
                f"{self.binding.endpoint_id}: context_parallel.devices names {', '.join(missing)}, but torch sees "
                f"{available} CUDA GPU(s) (torch {torch.__version__}); list GPUs that exist (CUDA_VISIBLE_DEVICES "
                "renumbers them from cuda:0)"
            )

    def start_followers(self, store_port: int) -> None:
        context = multiprocessing.get_context("spawn")
        current = multiprocessing.current_process()
        if current.daemon:
            # The worker starts the engine process as a daemon, and multiprocessing refuses children to daemons.
            # The flag only guards that; the followers die with this process anyway (daemons + die_with_parent).
            current.daemon = False
        for rank, device in enumerate(self.devices[1:], start=1):
            ours, theirs = context.Pipe()
            spec = FollowerSpec(
                binding=replace(self.binding, device=device),
                rank=rank,
                world_size=self.world_size,
                store_port=store_port,
                parent_pid=os.getpid(),
                torch_threads=torch.get_num_threads(),
            )
            process = context.Process(
                target=follower_main, args=(spec, theirs), name=f"framecast-rank{rank}", daemon=True
            )
            process.start()
            theirs.close()
            self.followers.append(Follower(rank, device, process, ours))

    def await_followers(self, kind: str) -> None:
        """Wait for every follower's `kind` message. Raises `EngineError` for a follower that failed or died."""
        for follower in self.followers:
            while True:
                ready = multiprocessing.connection.wait([follower.connection, follower.process.sentinel])
                if follower.connection in ready:
                    try:
                        message = follower.connection.recv()
                    except (EOFError, OSError):
                        message = {}
                    if message.get("type") == kind:
                        break
                    if message.get("type") == "failed":
                        raise EngineError(f"context_parallel: {follower.describe()} could not load: {message['error']}")
                    if message:
                        continue
                raise EngineError(
                    f"context_parallel: {follower.describe()} {describe_exit(follower.process)} while starting"
                )

    # -- one job ----------------------------------------------------------------------------------

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        log: LogCallback,
        on_section: SectionCallback | None = None,
    ) -> GenerationResult:
        """Render `request` on every rank; rank 0's frames come back. The `Engine.generate` contract, plus:

        Raises:
            EngineError: (422) a render whose video tokens the device count does not divide.
            ContextParallelGroupFailed: a follower died or the ranks fell out of step (after
                `on_group_failure` returned); the engine cannot run another job.
        """
        if self._failure is not None:
            raise ContextParallelGroupFailed(self._failure)
        if not self._ready:
            raise EngineError(f"{self.binding.endpoint_id}: load() was not called")
        self.check_token_count(request)
        self._job += 1
        job = self._job
        self._job_log = log
        try:
            for follower in self.followers:
                try:
                    follower.connection.send({"type": "run", "job": job, "request": request})
                except OSError:
                    self.record_failure(f"{follower.describe()} {describe_exit(follower.process)}")
                    raise ContextParallelGroupFailed(self._failure or "") from None
            result, raised, outcome = run_rank(self.rank_engine, self._counter, request, on_progress, log, on_section)
            problem = self.collect_outcomes(job, outcome)
            if problem is not None:
                self.record_failure(problem)
            if self._failure is not None:
                raise ContextParallelGroupFailed(self._failure) from raised
        finally:
            self._job_log = None
        if raised is not None:
            raise raised
        assert result is not None
        return result

    def check_token_count(self, request: GenerationRequest) -> None:
        """Raises `EngineError` (422) unless the render's video tokens split evenly across the ranks."""
        engine = self.rank_engine
        pipe = engine.pipeline
        width, height = scaled_size(request.width, request.height, engine.render_scale)
        num_frames = valid_num_frames(request.num_frames, pipe.vae_scale_factor_temporal)
        tokens = video_tokens(pipe, width, height, num_frames)
        if tokens % self.world_size:
            raise EngineError(
                f"{width}x{height} with {num_frames} frames makes {tokens} video tokens, which {self.world_size} "
                "devices cannot share evenly (context parallelism gives each the same number); choose another size "
                "or frame count",
                error_type="unprocessable_entity",
                status_code=422,
            )

    def collect_outcomes(self, job: int, own: RankOutcome) -> str | None:
        """Why the group cannot run another job; None when every follower reported `job` and none stopped mid-step."""
        if not own.clean:
            return f"rank 0 stopped inside a denoising step ({own.error}), which leaves the other ranks waiting"
        deadline = time.monotonic() + self.outcome_timeout_s
        for follower in self.followers:
            while True:
                waitables: list[Any] = [follower.connection, follower.process.sentinel]
                ready = multiprocessing.connection.wait(waitables, timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    return f"{follower.describe()} did not finish within {self.outcome_timeout_s:g}s of rank 0"
                if follower.connection not in ready:
                    return f"{follower.describe()} {describe_exit(follower.process)}"
                try:
                    message = follower.connection.recv()
                except (EOFError, OSError):
                    return f"{follower.describe()} {describe_exit(follower.process)}"
                if message.get("type") != "outcome" or message.get("job") != job:
                    continue
                outcome: RankOutcome = message["outcome"]
                if not outcome.clean:
                    return f"{follower.describe()} stopped inside a denoising step ({outcome.error})"
                break
        return None

    # -- failures and shutdown --------------------------------------------------------------------

    def record_failure(self, reason: str) -> None:
        """Mark the group broken, tell the job, and call `on_group_failure`; only the first call acts."""
        with self._failure_lock:
            if self._failure is not None:
                return
            self._failure = reason
        message = (
            f"Context parallelism ({self.world_size} devices) failed: {reason}. The model processes stop and the "
            "worker restarts them"
        )
        log = self._job_log
        if log is not None:
            log(message, "ERROR")
        self.on_group_failure(message)
        # The handler returned (tests): stop the other ranks, so that none waits for a peer that is gone.
        self.stop_followers()

    def watch_followers(self, wake: Connection) -> None:
        """The monitor thread: a follower that dies outside `close` breaks the group."""
        sentinels = {follower.process.sentinel: follower for follower in self.followers}
        ready = multiprocessing.connection.wait([*sentinels, wake])
        if self._closing:
            return
        for sentinel in ready:
            if isinstance(sentinel, int) and sentinel in sentinels:
                follower = sentinels[sentinel]
                self.record_failure(f"{follower.describe()} {describe_exit(follower.process)}")
                return

    def stop_followers(self) -> None:
        """Ask every follower to exit, and kill those that do not within 10 s. Safe from any thread."""
        self._closing = True
        if self._wake_monitor is not None:
            self._wake_monitor.send(None)
        for follower in self.followers:
            with suppress(OSError):
                follower.connection.send({"type": "stop"})
        for follower in self.followers:
            follower.process.join(timeout=10)
            if follower.process.is_alive():
                follower.process.kill()
                follower.process.join(timeout=10)

    def close(self) -> None:
        """Stop the followers and leave the process group; the engine runs no job afterwards. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.stop_followers()
        for follower in self.followers:
            follower.connection.close()
        self._ready = False
        if dist.is_initialized():
            dist.destroy_process_group()
