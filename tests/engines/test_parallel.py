"""One job on several devices: Wan with Ulysses context parallelism, two CPU ranks over gloo.

The in-process tests run rank 0 in the test process (one process group for the module) and one
spawned follower. The engine-process tests drive the real worker path: `EngineProcess` spawns the
engine process, which spawns its follower.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from framecast.bindings import BindingsError, ModelBinding, load_bindings_file, resolve_bindings
from framecast.engines.base import EngineError, GenerationCancelled, GenerationRequest, Progress
from framecast.engines.factory import build_engine

ENDPOINT = "fal-ai/wan-i2v"
TWO_CPU_RANKS = {"context_parallel": {"devices": ["cpu", "cpu"]}}
# 832x480 renders at 112x64 (1/8): 3 latent frames of 4x7 patches = 84 video tokens, 42 per rank.
FULL_TOKENS = 84
# Generous: the ranks start two torch processes on a small, shared CPU.
START_DEADLINE_S = 240.0
JOB_DEADLINE_S = 120.0


def wan_binding(weights: Path, **options: Any) -> ModelBinding:
    return ModelBinding(
        endpoint_id=ENDPOINT,
        engine="diffusers-wan-i2v",
        weights=str(weights),
        device="cpu",
        dtype="float32",
        render_scale=1 / 8,
        options={**TWO_CPU_RANKS, **options},
    )


def request_for(image: Image.Image, steps: int = 3, **changes: Any) -> GenerationRequest:
    fields: dict[str, Any] = {
        "image": image,
        "prompt": "a lighthouse at dusk",
        "width": 832,
        "height": 480,
        "num_frames": 9,
        "frames_per_second": 16,
        "num_inference_steps": steps,
        "seed": 7,
        **changes,
    }
    return GenerationRequest(**fields)


def quiet(message: str, level: str = "INFO", /) -> None:
    pass


# -- in-process: rank 0 here, one spawned follower ---------------------------------------------------------------


@pytest.fixture(scope="module")
def group_failures() -> list[str]:
    return []


@pytest.fixture(scope="module")
def parallel_engine(wan_tiny_dir: Path, group_failures: list[str]) -> Iterator[Any]:
    from framecast.engines.parallel import ContextParallelEngine

    engine = ContextParallelEngine(wan_binding(wan_tiny_dir), on_group_failure=group_failures.append)
    engine.load()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def reference(wan_engine: Any, image: Image.Image) -> Any:
    """The single-device engine's frames for `request_for(image)`."""
    return wan_engine.generate(request_for(image), lambda _: None, quiet).frames


def tokens_seen(transformer: Any) -> tuple[list[int], Any]:
    """The sequence length the last block sees, per forward (after diffusers' split at the first block)."""
    seen: list[int] = []

    def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append(int(hidden.shape[1]))

    return seen, transformer.blocks[-1].register_forward_pre_hook(record, with_kwargs=True)


def test_two_ranks_render_the_frames_of_one_process_each_computing_half_the_tokens(
    parallel_engine: Any, wan_engine: Any, image: Image.Image, reference: Any, group_failures: list[str]
) -> None:
    single_tokens, single_hook = tokens_seen(wan_engine.pipeline.transformer)
    rank0_tokens, rank0_hook = tokens_seen(parallel_engine.pipeline.transformer)
    steps: list[int] = []
    try:
        wan_engine.generate(request_for(image, steps=1), lambda _: None, quiet)
        result = parallel_engine.generate(request_for(image), lambda progress: steps.append(progress.step), quiet)
    finally:
        single_hook.remove()
        rank0_hook.remove()
    assert np.array_equal(result.frames, reference), "2 ranks must render exactly what 1 process renders"
    assert result.frames.shape == (9, 64, 112, 3) and result.seed == 7
    assert steps == [1, 2, 3], "rank 0 reports every step"
    # Rank 0's blocks saw half the video tokens: the follower computed the other half of every block.
    assert set(single_tokens) == {FULL_TOKENS}
    assert rank0_tokens and set(rank0_tokens) == {FULL_TOKENS // 2}
    assert parallel_engine.pipeline.transformer._parallel_config.context_parallel_config.ulysses_degree == 2
    assert group_failures == []


def test_step_caching_is_off_on_several_devices_and_says_so(
    parallel_engine: Any, image: Image.Image, reference: Any
) -> None:
    logs: list[tuple[str, str]] = []
    request = request_for(image, options={"acceleration": "regular"})
    result = parallel_engine.generate(
        request, lambda _: None, lambda message, level="INFO": logs.append((level, message))
    )
    assert ("INFO", "Step cache off: acceleration 'regular' is not used when a job runs on several devices") in logs
    assert np.array_equal(result.frames, reference), "no step was skipped on any rank"


@pytest.mark.parametrize(
    "raised",
    [GenerationCancelled(), EngineError("Injected test fault at step 2")],
    ids=["cancel", "error in the progress callback"],
)
def test_a_stop_at_a_step_stops_every_rank_there_and_the_group_runs_on(
    parallel_engine: Any, image: Image.Image, reference: Any, group_failures: list[str], raised: Exception
) -> None:
    steps: list[int] = []

    def stop_at_step_2(progress: Progress) -> None:
        steps.append(progress.step)
        if progress.step == 2:
            raise raised

    with pytest.raises(type(raised)) as caught:
        parallel_engine.generate(request_for(image, steps=6), stop_at_step_2, quiet)
    assert caught.value is raised
    assert steps == [1, 2]
    # Had the follower not stopped at step 2 too, it would still be denoising (or waiting in a collective) and this
    # job would hang, fail, or mix two jobs' tokens.
    again = parallel_engine.generate(request_for(image), lambda _: None, quiet)
    assert np.array_equal(again.frames, reference)
    assert group_failures == []


def test_a_size_whose_tokens_the_ranks_cannot_share_is_a_422_and_the_group_runs_on(
    parallel_engine: Any, image: Image.Image, reference: Any, group_failures: list[str]
) -> None:
    # 896x384 renders at 112x48: 3 latent frames of 3x7 patches = 63 tokens, which 2 ranks cannot split.
    with pytest.raises(EngineError, match=r"112x48 with 9 frames makes 63 video tokens, which 2 devices") as caught:
        parallel_engine.generate(request_for(image, width=896, height=384), lambda _: None, quiet)
    assert (caught.value.status_code, caught.value.error_type) == (422, "unprocessable_entity")
    again = parallel_engine.generate(request_for(image), lambda _: None, quiet)
    assert np.array_equal(again.frames, reference)
    assert group_failures == []


def test_a_device_count_that_does_not_divide_the_heads_is_refused(wan_engine: Any) -> None:
    from framecast.engines.parallel import check_degree

    check_degree(wan_engine, 2)
    with pytest.raises(EngineError, match=r"the 2 attention heads of .* 3 devices do not divide 2; use 2 devices"):
        check_degree(wan_engine, 3)


def test_a_second_context_parallel_engine_in_one_process_is_refused(parallel_engine: Any, wan_tiny_dir: Path) -> None:
    from framecast.engines.parallel import ContextParallelEngine

    second = ContextParallelEngine(wan_binding(wan_tiny_dir), on_group_failure=pytest.fail)
    with pytest.raises(EngineError, match=r"another context-parallel binding already runs in this worker"):
        second.load()
    assert not second.followers, "refused before starting anything"


# -- through the engine process, as the worker runs it ------------------------------------------------------------


def png_bytes(width: int = 96, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def run_message(output_path: Path, **extra: Any) -> dict[str, Any]:
    generation = {
        "prompt": "a lighthouse at dusk",
        "width": 832,
        "height": 480,
        "num_frames": 9,
        "frames_per_second": 16,
        "num_inference_steps": 3,
        "seed": 7,
        "options": {},
    }
    return {
        "type": "run",
        "endpoint_id": ENDPOINT,
        "generation": generation,
        "images": {"image": png_bytes()},
        "output_path": str(output_path),
        **extra,
    }


def receive_until(engine: Any, done: Callable[[dict[str, Any]], bool], deadline_s: float) -> list[dict[str, Any]]:
    """Every message up to and including the first that `done` accepts. Fails after `deadline_s`."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        message = engine.receive(0.1)
        if message is None:
            continue
        messages.append(message)
        if done(message):
            return messages
    pytest.fail(f"no awaited message within {deadline_s:g}s; got {messages}")


def start_engine_process(weights: Path) -> Any:
    from framecast.worker.worker import EngineProcess

    engine = EngineProcess([wan_binding(weights)], max_image_pixels=10**6, torch_threads=1)
    (ready,) = [
        m for m in receive_until(engine, lambda m: m["type"] == "ready", START_DEADLINE_S) if m["type"] == "ready"
    ]
    assert ready["endpoints"] == [ENDPOINT] and ready["failures"] == {}
    return engine


def followers_of(pid: int) -> list[int]:
    """Live processes that `pid` spawned with multiprocessing, its resource tracker aside (from /proc; Linux)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and "spawn_main" in command:
            children.append(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def wait_for(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def frame_count(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


@pytest.fixture(scope="module")
def engine_process(wan_tiny_dir: Path) -> Iterator[Any]:
    engine = start_engine_process(wan_tiny_dir)
    yield engine
    engine.send({"type": "stop"})
    engine.process.join(timeout=30)
    engine.kill()


def is_job_end(message: dict[str, Any]) -> bool:
    return message["type"] in ("done", "failed", "cancelled")


def test_the_engine_process_runs_and_cancels_jobs_on_two_ranks(engine_process: Any, tmp_path: Path) -> None:
    engine_process.send(run_message(tmp_path / "first.mp4"))
    messages = receive_until(engine_process, is_job_end, JOB_DEADLINE_S)
    done = messages[-1]
    assert done["type"] == "done", messages
    assert (done["num_frames"], done["width"], done["height"]) == (9, 112, 64)
    assert frame_count(done["output_path"]) == 9
    assert [m["step"] for m in messages if m["type"] == "progress"] == [1, 2, 3]

    # Cancel while rank 0 holds at step 1 and the follower waits for its verdict.
    engine_process.send(run_message(tmp_path / "cancelled.mp4", test_fault="block_at_step=1"))
    receive_until(engine_process, lambda m: m.get("message") == "Test fault: holding at step 1", JOB_DEADLINE_S)
    engine_process.signal_cancel()
    assert receive_until(engine_process, is_job_end, JOB_DEADLINE_S)[-1]["type"] == "cancelled"

    engine_process.send(run_message(tmp_path / "after.mp4"))
    assert receive_until(engine_process, is_job_end, JOB_DEADLINE_S)[-1]["type"] == "done", "the group runs on"


def test_a_killed_follower_fails_the_job_and_ends_the_engine_process(wan_tiny_dir: Path, tmp_path: Path) -> None:
    from framecast.engines.parallel import GROUP_FAILED_EXIT_CODE
    from framecast.worker.worker import EngineProcessDied

    engine = start_engine_process(wan_tiny_dir)
    try:
        engine.send(run_message(tmp_path / "out.mp4", test_fault="block_at_step=1"))
        receive_until(engine, lambda m: m.get("message") == "Test fault: holding at step 1", JOB_DEADLINE_S)
        (follower,) = followers_of(engine.process.pid)
        os.kill(follower, signal.SIGKILL)
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + JOB_DEADLINE_S
        with pytest.raises(EngineProcessDied, match=f"exited with code {GROUP_FAILED_EXIT_CODE}"):
            while time.monotonic() < deadline:
                message = engine.receive(0.1)
                if message is not None:
                    messages.append(message)
    finally:
        engine.kill()
    errors = [m["message"] for m in messages if m["type"] == "log" and m["level"] == "ERROR"]
    assert len(errors) == 1, messages
    assert f"rank 1 on cpu (pid {follower}) was killed by signal SIGKILL" in errors[0]
    assert not any(is_job_end(m) for m in messages), "the worker fails the job when the process exits"


def test_the_followers_die_with_the_engine_process(wan_tiny_dir: Path) -> None:
    engine = start_engine_process(wan_tiny_dir)
    (follower,) = followers_of(engine.process.pid)
    engine.kill()  # SIGKILL, as the worker does after the cancel grace period
    assert wait_for(lambda: not alive(follower), 30), "no orphan rank"


# -- bindings: which engines may ask, and how ---------------------------------------------------------------------


WAN = 'engine = "diffusers-wan-i2v"\nweights = "a/b"\n'


def bindings_file(tmp_path: Path, entry: str) -> Path:
    path = tmp_path / "bindings.toml"
    path.write_text(entry)
    return path


def load(path: Path) -> list[ModelBinding]:
    from framecast.engines.names import ENGINE_NAMES

    return load_bindings_file(path, data_dir=path.parent, known_engines=set(ENGINE_NAMES))


def test_a_binding_gives_its_devices_and_rank_0_is_its_device(tmp_path: Path) -> None:
    path = bindings_file(
        tmp_path,
        '[endpoints."fal-ai/wan-i2v"]\nengine = "diffusers-wan-i2v"\nweights = "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers"\n'
        'options = { context_parallel = { devices = ["cuda:2", "cuda:3"] } }\n',
    )
    (binding,) = load(path)
    assert binding.device == "cuda:2"
    assert binding.options["context_parallel"] == {"devices": ["cuda:2", "cuda:3"]}
    (resolved,) = resolve_bindings(str(path), data_dir=tmp_path, device="cuda:7")
    assert resolved.device == "cuda:2", "--device moves single-device bindings only"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            'engine = "diffusers-framepack"\nweights = "hunyuanvideo-community/HunyuanVideo"\n'
            'options = { context_parallel = { devices = ["cuda:0", "cuda:1"] } }',
            r"endpoints\.'e'\.options\.context_parallel: engine 'diffusers-framepack' cannot run one job on several "
            r"devices: diffusers has no context-parallel plan for its model \(engines that can: diffusers-wan-i2v\)",
        ),
        (
            WAN + 'options = { context_parallel = { devices = ["cuda:0"] } }',
            r"options\.context_parallel\.devices: .*at least 2",
        ),
        (
            WAN + 'options = { context_parallel = { devices = ["cuda:0", "cuda:0"] } }',
            r"each GPU may appear once",
        ),
        (
            WAN + 'options = { context_parallel = { devices = ["cuda:0", "cpu"] } }',
            r"all devices must be GPUs, or all 'cpu'",
        ),
        (
            WAN + 'options = { context_parallel = { devices = ["cuda", "gpu1"] } }',
            r"'cuda', 'gpu1': name each GPU as 'cuda:N'",
        ),
        (
            WAN + 'options = { cache = "first_block", context_parallel = { devices = ["cuda:0", "cuda:1"] } }',
            r"cache: each rank would judge its own share",
        ),
        (
            WAN + 'options = { memory = "group_offload", context_parallel = { devices = ["cuda:0", "cuda:1"] } }',
            r"memory must be 'none'",
        ),
        (
            WAN + 'device = "cuda:1"\noptions = { context_parallel = { devices = ["cuda:0", "cuda:1"] } }',
            r"endpoints\.'e'\.device: 'cuda:1' is not 'cuda:0', the first of options\.context_parallel\.devices",
        ),
    ],
    ids=["not wan", "one device", "a gpu twice", "gpus and cpu", "unnamed gpus", "step cache", "offload", "device"],
)
def test_a_binding_that_cannot_run_on_several_devices_is_refused(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(BindingsError, match=message):
        load(bindings_file(tmp_path, f'[endpoints."e"]\n{entry}\n'))


def test_the_factory_refuses_context_parallelism_for_an_engine_without_a_plan() -> None:
    binding = ModelBinding("fal-ai/stable-video", "diffusers-svd", "/nowhere", options=TWO_CPU_RANKS)
    with pytest.raises(EngineError, match=r"fal-ai/stable-video: options\.context_parallel: engine 'diffusers-svd'"):
        build_engine(binding)
