"""Engine overhead: the bare diffusers pipeline vs framecast's engine vs a whole job, per tiny engine family.

For each family, on the tiny random-weight pipelines (`framecast dev tiny-models`, built offline into a temp
dir), one request is timed three ways, interleaved (raw, engine, job, raw, engine, job...) so that drift on a
busy machine hits all three alike; each number is the median of --repeats runs after one discarded warm-up:

  raw     `<Pipeline>.from_pretrained(dir)` loaded once, then per run: fit the image to the render size, call the
          pipeline with the arguments the engine would pass (same size, frame count, steps, guidance, seed,
          scheduler shift), trim to the requested frame count, `encode_mp4` to a temp file.
  engine  `build_engine(binding)` + `load()` once, then per run: `engine.generate(request)` (fresh scheduler,
          seeded generator, image fit, progress callback every step) + `encode_mp4`.
  job     the same request as a real job through a running `framecast serve` (one worker, the engine process
          on --threads torch threads, TLS on 127.0.0.1): POST /queue/<endpoint> with the image(s) as PNG data
          URIs, GET .../status?logs=0 every --poll-s until COMPLETED, GET the result. Wall time from the POST to
          the result: request validation, image decode and storage, queueing, the worker's claim, the hop to the
          engine process and back, image decode there, generate (with progress messages per step and, for
          FramePack, an MP4 preview of the video so far after every section), MP4 encode, moving the output
          into the file store, the completion write, status-poll granularity and the result GET.

The request is the endpoint's: the script validates an endpoint input, lets the endpoint plan it
(`spec.plan_generation`, as submit does) and renders at the binding's render_scale, as the server does. Bindings
are the `tiny` profile's (framecast/profiles/tiny.toml), except that Wan Pro (Wan 2.2 A14B; fixed at 1080p, 180
frames, 40 steps) and Stable Video (fixed at 1024x576, 25 frames, 25 steps) render at 1/32 and 1/16 instead of
1/16 and 1/8, so that every family's job takes 1-2 s on one CPU thread and the default run stays near 3 minutes;
--profile-scales keeps the profile's scales. Wan requests use acceleration "none" so that no step cache runs:
all three sides do the same work, which the `same` column checks (raw and engine frames bit-identical).

Output: one row per family with the medians in seconds, engine/raw and job/raw (the target for job/raw is
<= 1.10; it is reported, never asserted), "job/raw best" (fastest job / fastest raw run: noise on a shared
machine only ever adds time, so this is the steadier estimate of the overhead) and "same" (raw and engine
frames bit-identical). Then a breakdown of the job's median in milliseconds, taken from the server's own job
record (created/started/finished timestamps in its SQLite database, `metrics.inference_time` and the
"Done: ... (+X s encode)" log line):

  submit  POST sent -> job row created (validation, data-URI decode and probe, input stored, insert)
  queue   created -> claimed by the worker (an idle worker checks for jobs every 20 ms)
  gen     the engine process's generate (image decode excluded), as the job reports it
  enc     the engine process's MP4 encode
  run+    the rest of claimed -> finished: blob read, pipe to the engine process and back, image decode,
          moving the MP4 into the store, writing the outcome
  notice  finished -> the client's poll saw COMPLETED (about half of --poll-s plus one status request)
  result  the result GET
  eng gen / eng enc  the in-process engine's generate and encode, to hold against gen and enc
  job-engine  median job minus median engine run
  serving     median of (job - gen - enc): everything the server adds around the engine's own work;
  serving/raw that as a share of the raw median

Last, the CPU each process used during the jobs, in % of one core (from /proc): the API process (answering
the polls), the worker, the engine process and this script (polling), and the share of the job the engine's
threads spent runnable but waiting for a CPU (schedstat). The engine runs on --threads threads; an engine
share well under 100 % with little waiting means it was blocked or idle, a large wait means CPU contention.

A measurement script, not a test: it prints numbers and never fails on them. Timings on a shared 2-core machine
jitter by 5-15 % between runs; compare ratios from one run, not absolute seconds across runs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import gc
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.measure import cpu_stall_s, median, process_cpu_s, quiet_offline_torch, table  # noqa: E402
from tests.e2e.server import FramecastServer, make_certificates  # noqa: E402

if TYPE_CHECKING:
    from framecast.bindings import ModelBinding
    from framecast.engines.base import GenerationRequest

SEED = 1234
PROMPT = "a cat walking in the snow"
# A 16:9 input, so that endpoints with aspect_ratio "auto" render 16:9 too.
IMAGE_SIZE = (160, 90)
IMAGE_COLOR, LAST_IMAGE_COLOR = (30, 120, 200), (200, 80, 40)
JOB_TIMEOUT_S = 300.0
TARGET_JOB_RATIO = 1.10
# Lower render scales than the tiny profile's for the two endpoints whose workload the input cannot shrink.
BENCH_RENDER_SCALES = {"fal-ai/wan-pro/image-to-video": 1 / 32, "fal-ai/stable-video": 1 / 16}
DONE_ENCODE = re.compile(r"\(\+([0-9.]+)s encode\)")


@dataclass(frozen=True)
class Family:
    key: str
    label: str
    endpoint: str
    # The endpoint input without its image fields (those are filled with PNG data URIs).
    inputs: dict[str, Any]


WAN_INPUT: dict[str, Any] = {
    "prompt": PROMPT,
    "resolution": "480p",
    "aspect_ratio": "16:9",
    "num_frames": 81,
    "frames_per_second": 16,
    "num_inference_steps": 8,
    "guide_scale": 5.0,
    "shift": 5.0,
    "acceleration": "none",
    "seed": SEED,
    "enable_safety_checker": False,
}
FRAMEPACK_INPUT: dict[str, Any] = {
    "prompt": PROMPT,
    "resolution": "480p",
    "aspect_ratio": "16:9",
    "num_frames": 36,  # one section of 36 frames (the fal endpoint's 25 steps per section are fixed)
    "cfg_scale": 1.0,
    "guidance_scale": 10.0,
    "seed": SEED,
    "enable_safety_checker": False,
}
FAMILIES = [
    Family("wan-i2v", "Wan 2.1 I2V", "fal-ai/wan-i2v", WAN_INPUT),
    Family("wan-flf2v", "Wan 2.1 FLF2V", "fal-ai/wan-flf2v", WAN_INPUT),
    Family(
        "wan22-a14b",
        "Wan 2.2 A14B",
        "fal-ai/wan-pro/image-to-video",
        {"prompt": PROMPT, "seed": SEED, "enable_safety_checker": False},
    ),
    Family("framepack", "FramePack", "fal-ai/framepack", FRAMEPACK_INPUT),
    Family("framepack-f1", "FramePack F1", "fal-ai/framepack/f1", FRAMEPACK_INPUT),
    Family("svd", "SVD", "fal-ai/stable-video", {"seed": SEED, "motion_bucket_id": 127, "cond_aug": 0.02, "fps": 25}),
    Family(
        "skyreels-df",
        "SkyReels DF",
        "fal-ai/magi-distilled/image-to-video",
        {
            "prompt": PROMPT,
            "resolution": "480p",
            "aspect_ratio": "16:9",
            "num_frames": 96,
            "num_inference_steps": "8",
            "seed": SEED,
            "enable_safety_checker": False,
        },
    ),
]
FAMILY_KEYS = [family.key for family in FAMILIES]


# -- small helpers ----------------------------------------------------------------------------------


def png_bytes(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of a process spent runnable but waiting for a CPU (/proc/<pid>/task/*/schedstat)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue
    return total


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def server_processes(server: FramecastServer) -> dict[str, int]:
    """{"api": pid, "worker": pid, "engine": pid} of a one-worker server (Linux /proc), as far as found."""
    assert server.process is not None
    found = {"api": server.process.pid}
    for worker in child_pids(server.process.pid):
        if b"framecast\x00worker" not in Path(f"/proc/{worker}/cmdline").read_bytes():
            continue
        found["worker"] = worker
        for child in child_pids(worker):
            if b"multiprocessing" in Path(f"/proc/{child}/cmdline").read_bytes():  # the spawned engine process
                found["engine"] = child
    return found


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    raise TypeError(f"cannot write {value!r} to TOML")


# -- the request every side runs -----------------------------------------------------------------------


@dataclass
class Case:
    """One family's request: the endpoint input, its plan, and the binding that renders it."""

    family: Family
    binding: ModelBinding
    job_input: dict[str, Any]
    request: GenerationRequest
    render_size: tuple[int, int]


def build_case(family: Family, binding: ModelBinding, images: dict[str, bytes]) -> Case:
    """Validate the endpoint input and plan it as submit does; decode the images as the engine process does."""
    from framecast.endpoints import ImageDimensions, build_catalogue
    from framecast.engines.base import GenerationRequest
    from framecast.engines.diffusers_engine import scaled_size
    from framecast.inputs.images import load_image

    spec = build_catalogue()[family.endpoint]
    # Image fields in the endpoint's order: the first is the first frame, a second one the last frame.
    field_bytes = dict(zip(spec.image_fields, [images["image"], images["last_image"]], strict=False))
    job_input = {**family.inputs, **{name: data_uri(data) for name, data in field_bytes.items()}}
    plan = spec.plan_generation(
        spec.input_model.model_validate(job_input),
        {name: ImageDimensions(*IMAGE_SIZE) for name in field_bytes},
    )
    decoded = {spec.image_fields[name]: load_image(data, max_image_pixels=10**8) for name, data in field_bytes.items()}
    request = GenerationRequest(image=decoded["image"], last_image=decoded.get("last_image"), **plan.generation)
    size = scaled_size(request.width, request.height, binding.render_scale)
    return Case(family, binding, job_input, request, size)


# -- a. raw pipeline -----------------------------------------------------------------------------------


class RawPipeline:
    """The family's diffusers pipeline, loaded and called the way a plain diffusers script would."""

    def __init__(self, case: Case) -> None:
        import diffusers
        import torch

        from framecast.engines.diffusers_engine import DTYPES, DiffusersEngine
        from framecast.engines.factory import build_engine
        from framecast.engines.names import ENGINE_OPTIONS

        binding = case.binding
        engine = build_engine(binding)  # not loaded: only for its pipeline class name and sampling type
        assert isinstance(engine, DiffusersEngine)
        engine_class = type(engine)
        self.engine_name: str = binding.engine
        self.sampling_type: str | None = getattr(engine_class, "sampling_type", None)
        self.settings: Any = ENGINE_OPTIONS[binding.engine].model_validate(binding.options)
        self.case = case
        pipeline_class = getattr(diffusers, engine_class.pipeline_class_name)
        self.pipe: Any = pipeline_class.from_pretrained(
            binding.weights, dtype=DTYPES[binding.dtype], local_files_only=True
        ).to(binding.device)
        self.pipe.set_progress_bar_config(disable=True)
        shift = case.request.shift
        if shift is not None:  # the request's shift, set on the scheduler once
            config = self.pipe.scheduler.config
            key = "flow_shift" if "flow_shift" in config else "shift"
            self.pipe.scheduler = type(self.pipe.scheduler).from_config(config, **{key: float(shift)})
        self.torch = torch

    def arguments(self) -> dict[str, Any]:
        from PIL import Image, ImageOps

        from framecast.engines.framepack import FramePackEngine, framepack_sections
        from framecast.engines.skyreels import ASYNC_CAUSAL_BLOCK_SIZE, chunk_plan
        from framecast.engines.stable_video import MIN_GUIDANCE_SCALE
        from framecast.engines.wan import valid_num_frames

        request, pipe, settings = self.case.request, self.pipe, self.settings
        width, height = self.case.render_size

        def fit(image: Any) -> Any:
            return None if image is None else ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)

        common: dict[str, Any] = {
            "image": fit(request.image),
            "height": height,
            "width": width,
            "num_inference_steps": request.num_inference_steps,
            "generator": self.torch.Generator(device=self.case.binding.device).manual_seed(request.seed),
            "output_type": "np",
        }
        temporal = getattr(pipe, "vae_scale_factor_temporal", 4)
        if self.engine_name == "diffusers-wan-i2v":
            extra = {"guidance_scale_2": request.guidance_scale} if pipe.transformer_2 is not None else {}
            return {
                **common,
                "last_image": fit(request.last_image),
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "num_frames": valid_num_frames(request.num_frames, temporal),
                "guidance_scale": request.guidance_scale,
                **extra,
            }
        if self.engine_name in ("diffusers-framepack", "diffusers-framepack-f1"):
            window = settings.latent_window_size
            sections = framepack_sections(request.num_frames, window, temporal)
            return {
                **common,
                "last_image": fit(request.last_image),
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt or None,
                "num_frames": sections * ((window - 1) * temporal + 1),
                "latent_window_size": window,
                "guidance_scale": request.guidance_scale,
                "true_cfg_scale": FramePackEngine.true_cfg_scale(request),
                "sampling_type": self.sampling_type,
            }
        if self.engine_name == "diffusers-svd":
            options = request.options
            return {
                **common,
                "num_frames": request.num_frames,
                "min_guidance_scale": MIN_GUIDANCE_SCALE,
                "max_guidance_scale": request.guidance_scale,
                "fps": int(options.get("conditioning_fps", request.frames_per_second)),
                "motion_bucket_id": int(options.get("motion_bucket_id", 127)),
                "noise_aug_strength": float(options.get("noise_aug_strength", 0.02)),
                "decode_chunk_size": settings.decode_chunk_size,
            }
        if self.engine_name == "diffusers-skyreels-df":
            base = valid_num_frames(settings.base_num_frames, temporal)
            num_frames, chunks = chunk_plan(request.num_frames, base, settings.overlap_history, temporal)
            return {
                **common,
                "last_image": fit(request.last_image),
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "num_frames": num_frames,
                "guidance_scale": request.guidance_scale,
                "base_num_frames": min(base, num_frames),
                "overlap_history": settings.overlap_history if chunks > 1 else None,
                "addnoise_condition": settings.addnoise_condition if chunks > 1 else 0,
                "ar_step": settings.ar_step,
                "causal_block_size": ASYNC_CAUSAL_BLOCK_SIZE if settings.ar_step > 0 else None,
                "fps": request.frames_per_second,
            }
        raise ValueError(f"no raw call for engine {self.engine_name}")

    def __call__(self) -> Any:
        import numpy as np

        from framecast.engines.video import to_uint8_frames

        output = self.pipe(**self.arguments())
        return to_uint8_frames(np.asarray(output.frames))[: self.case.request.num_frames]


# -- c. job through the server -------------------------------------------------------------------------


@dataclass
class JobTiming:
    request_id: str
    total_s: float
    posted_at: float  # time.time() at the POST
    seen_completed_at: float  # time.time() when a poll saw COMPLETED
    finished_at: float  # time.time() when the result GET returned
    polls: int
    cpu_s: dict[str, float]  # CPU seconds each process used during the job: api, worker, engine, client


def cpu_snapshot(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each server process and of this one (the client), and the engine's run-queue wait."""
    snapshot = {name: process_cpu_s(pid) for name, pid in processes.items()}
    snapshot["client"] = time.process_time()
    if "engine" in processes:
        snapshot["engine_wait"] = runqueue_wait_s(processes["engine"])
    return snapshot


def run_job(
    client: httpx.Client, endpoint: str, job_input: dict[str, Any], poll_s: float, processes: dict[str, int]
) -> JobTiming:
    cpu_before = cpu_snapshot(processes)
    started = time.perf_counter()
    posted_at = time.time()
    response = client.post(f"/queue/{endpoint}", json=job_input)
    response.raise_for_status()
    request_id = response.json()["request_id"]
    base = f"/queue/{endpoint}/requests/{request_id}"
    polls = 0
    deadline = started + JOB_TIMEOUT_S
    while True:
        poll_started = time.perf_counter()
        body = client.get(f"{base}/status", params={"logs": "0"}).json()
        polls += 1
        if body["status"] == "COMPLETED":
            break
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{endpoint} {request_id} did not complete within {JOB_TIMEOUT_S}s")
        time.sleep(max(0.0, poll_s - (time.perf_counter() - poll_started)))
    seen_completed_at = time.time()
    result = client.get(base)
    if result.status_code != 200 or "video" not in result.json():
        raise RuntimeError(f"{endpoint} {request_id} failed: HTTP {result.status_code} {result.text[:500]}")
    total_s = time.perf_counter() - started
    finished_at = time.time()
    cpu_after = cpu_snapshot(processes)
    return JobTiming(
        request_id=request_id,
        total_s=total_s,
        posted_at=posted_at,
        seen_completed_at=seen_completed_at,
        finished_at=finished_at,
        polls=polls,
        cpu_s={name: cpu_after[name] - cpu_before[name] for name in cpu_before},
    )


def job_breakdown(database: Path, job: JobTiming) -> dict[str, float]:
    """Milliseconds per stage of one job, from the server's job row and its "Done" log line."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        created, started, finished, inference = connection.execute(
            "SELECT created_at, started_at, finished_at, inference_time_s FROM jobs WHERE request_id = ?",
            (job.request_id,),
        ).fetchone()
        messages = [
            row[0]
            for row in connection.execute(
                "SELECT message FROM job_events WHERE request_id = ? AND message LIKE 'Done:%'", (job.request_id,)
            )
        ]
    match = DONE_ENCODE.search(messages[-1]) if messages else None
    encode = float(match.group(1)) if match else float("nan")
    return {
        "submit": 1000 * (created - job.posted_at),
        "queue": 1000 * (started - created),
        "gen": 1000 * inference,
        "enc": 1000 * encode,
        "run+": 1000 * ((finished - started) - inference - encode),
        "notice": 1000 * (job.seen_completed_at - finished),
        "result": 1000 * (job.finished_at - job.seen_completed_at),
    }


# -- the run -------------------------------------------------------------------------------------------


@dataclass
class FamilyResult:
    family: str
    endpoint: str
    render_size: str
    num_frames: int
    steps: int
    raw_s: list[float] = field(default_factory=list)
    engine_s: list[float] = field(default_factory=list)
    engine_generate_s: list[float] = field(default_factory=list)
    engine_encode_s: list[float] = field(default_factory=list)
    job_s: list[float] = field(default_factory=list)
    jobs: list[JobTiming] = field(default_factory=list)
    breakdowns: list[dict[str, float]] = field(default_factory=list)
    max_frame_diff: int = -1  # raw vs engine frames, uint8; 0 = bit-identical


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def measure_family(
    case: Case, client: httpx.Client | None, processes: dict[str, int], repeats: int, poll_s: float, scratch: Path
) -> FamilyResult:
    import numpy as np

    from framecast.engines.factory import build_engine
    from framecast.engines.video import encode_mp4

    request = case.request
    result = FamilyResult(
        family=case.family.label,
        endpoint=case.family.endpoint,
        render_size="{}x{}".format(*case.render_size),
        num_frames=request.num_frames,
        steps=request.num_inference_steps,
    )
    raw = RawPipeline(case)
    engine = build_engine(case.binding)
    engine.load()
    output = scratch / "out.mp4"

    def ignore_log(_message: str, _level: str = "INFO") -> None:
        pass

    def encode(frames: Any) -> None:
        encode_mp4(frames, frames_per_second=request.frames_per_second, path=output)

    def run_raw() -> Any:
        frames = raw()
        encode(frames)
        return frames

    def run_engine() -> tuple[float, float, Any]:
        generate_s, generated = timed(lambda: engine.generate(request, lambda _progress: None, ignore_log))
        encode_s, _ = timed(lambda: encode(generated.frames))
        return generate_s, encode_s, generated.frames

    for index in range(1 + repeats):  # the first round is the warm-up
        raw_s, raw_frames = timed(run_raw)
        engine_s, (generate_s, encode_s, engine_frames) = timed(run_engine)
        job = None if client is None else run_job(client, case.family.endpoint, case.job_input, poll_s, processes)
        if index == 0:
            if raw_frames.shape == engine_frames.shape:
                difference = np.abs(raw_frames.astype(np.int16) - engine_frames.astype(np.int16))
                result.max_frame_diff = int(difference.max())
            continue
        result.raw_s.append(raw_s)
        result.engine_s.append(engine_s)
        result.engine_generate_s.append(generate_s)
        result.engine_encode_s.append(encode_s)
        if job is not None:
            result.job_s.append(job.total_s)
            result.jobs.append(job)
    return result


def bench_bindings(data_dir: Path, tiny: Path, endpoints: list[str], profile_scales: bool) -> list[ModelBinding]:
    """The tiny profile's bindings of `endpoints`, weights in `tiny`, with the bench's render scales."""
    from framecast.bindings import resolve_bindings

    bindings = {binding.endpoint_id: binding for binding in resolve_bindings("tiny", data_dir=data_dir)}
    selected = []
    for endpoint in endpoints:
        binding = bindings[endpoint]
        binding = replace(binding, weights=str(tiny / Path(binding.weights).name))
        if not profile_scales and endpoint in BENCH_RENDER_SCALES:
            binding = replace(binding, render_scale=BENCH_RENDER_SCALES[endpoint])
        selected.append(binding)
    return selected


def write_bindings(path: Path, bindings: list[ModelBinding]) -> None:
    lines = ["# Written by bench/bench_engines.py: the tiny profile's bindings used by this run.", ""]
    for binding in bindings:
        lines.append(f"[endpoints.{json.dumps(binding.endpoint_id)}]")
        for key in ("engine", "weights", "device", "dtype", "render_scale"):
            lines.append(f"{key} = {toml_value(getattr(binding, key))}")
        if binding.options:
            options = ", ".join(f"{key} = {toml_value(value)}" for key, value in binding.options.items())
            lines.append(f"options = {{ {options} }}")
        lines.append("")
    path.write_text("\n".join(lines))


def ratio(numerator: list[float], denominator: list[float]) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{median(numerator) / median(denominator):.3f}"


def report(results: list[FamilyResult], with_jobs: bool) -> None:
    print()
    print("median seconds per request (generate + MP4 encode; job = submit -> result)")
    headers = ["family", "endpoint", "render", "frames", "steps", "raw s", "engine s"]
    headers += ["job s", "engine/raw", "job/raw", "job/raw best"] if with_jobs else ["engine/raw"]
    headers += ["same"]
    rows = []
    for result in results:
        row: list[Any] = [result.family, result.endpoint, result.render_size, result.num_frames, result.steps]
        row += [f"{median(result.raw_s):.3f}", f"{median(result.engine_s):.3f}"]
        if with_jobs:
            row += [
                f"{median(result.job_s):.3f}",
                ratio(result.engine_s, result.raw_s),
                ratio(result.job_s, result.raw_s),
                f"{min(result.job_s) / min(result.raw_s):.3f}",
            ]
        else:
            row += [ratio(result.engine_s, result.raw_s)]
        row.append("yes" if result.max_frame_diff == 0 else f"max diff {result.max_frame_diff}")
        rows.append(row)
    print(table(headers, rows))
    if with_jobs:
        print(
            f"target: job/raw <= {TARGET_JOB_RATIO:.2f} (reported, not asserted); "
            "best = fastest job / fastest raw run (noise only ever adds time)"
        )
        print()
        print("job breakdown, median ms per stage (see --help); eng gen / eng enc = the in-process engine's")
        stages = ["submit", "queue", "gen", "enc", "run+", "notice", "result"]
        headers = ["family", "job", *stages, "eng gen", "eng enc", "job-engine", "serving", "serving/raw"]
        rows = []
        for result in results:
            stage_medians = [median([breakdown[stage] for breakdown in result.breakdowns]) for stage in stages]
            job_ms, engine_ms = 1000 * median(result.job_s), 1000 * median(result.engine_s)
            row = [result.family, f"{job_ms:.0f}", *[f"{value:.0f}" for value in stage_medians]]
            row += [f"{1000 * median(result.engine_generate_s):.0f}", f"{1000 * median(result.engine_encode_s):.0f}"]
            row.append(f"{job_ms - engine_ms:+.0f}")
            pairs = zip(result.jobs, result.breakdowns, strict=True)
            serving = median([1000 * job.total_s - stage["gen"] - stage["enc"] for job, stage in pairs])
            row += [f"{serving:.0f}", f"{serving / (1000 * median(result.raw_s)):.1%}"]
            rows.append(row)
        print(table(headers, rows))
        print()
        print("CPU used during the job, median % of one core (client = this script polling)")
        names = ["api", "worker", "engine", "client"]
        rows = []
        for result in results:
            shares = {
                name: median([100 * job.cpu_s.get(name, float("nan")) / job.total_s for job in result.jobs])
                for name in names
            }
            wait = median([100 * job.cpu_s.get("engine_wait", float("nan")) / job.total_s for job in result.jobs])
            cells = [result.family, *[f"{shares[name]:.0f}" for name in names], f"{sum(shares.values()):.0f}"]
            rows.append([*cells, f"{wait:.0f}"])
        print(table(["family", *names, "total", "engine waiting for a CPU"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--families",
        default=",".join(FAMILY_KEYS),
        help=f"comma-separated subset of {','.join(FAMILY_KEYS)} (default: all)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per side after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads here and in the engine process (1)")
    parser.add_argument("--no-server", action="store_true", help="skip the job side (no server is started)")
    parser.add_argument("--poll-s", type=float, default=0.02, help="status poll interval of the job side (0.02)")
    parser.add_argument(
        "--profile-scales",
        action="store_true",
        help="render Wan Pro and Stable Video at the tiny profile's scales (1/16, 1/8: several times slower)",
    )
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (models, server data and log)")
    arguments = parser.parse_args()
    keys = [key.strip() for key in arguments.families.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(FAMILY_KEYS))
    if unknown or not keys:
        parser.error(f"unknown --families {unknown}; choose from {','.join(FAMILY_KEYS)}")
    if arguments.repeats < 1 or arguments.threads < 1 or arguments.poll_s <= 0:
        parser.error("--repeats and --threads must be >= 1, --poll-s > 0")
    families = [family for family in FAMILIES if family.key in keys]

    quiet_offline_torch(arguments.threads)
    from framecast.engines.tiny_models import build_tiny_models

    work = Path(tempfile.mkdtemp(prefix="framecast-bench-engines-"))
    server: FramecastServer | None = None
    results: list[FamilyResult] = []
    started, stall_before = time.perf_counter(), cpu_stall_s()
    try:
        print(f"building tiny models in {work} ...", flush=True)
        tiny = work / "tiny"
        build_tiny_models(tiny)
        data_dir = work / "server" / "data"
        data_dir.mkdir(parents=True)
        bindings = bench_bindings(data_dir, tiny, [family.endpoint for family in families], arguments.profile_scales)
        images = {"image": png_bytes(IMAGE_COLOR), "last_image": png_bytes(LAST_IMAGE_COLOR)}
        cases = [build_case(family, binding, images) for family, binding in zip(families, bindings, strict=True)]
        if not arguments.no_server:
            bindings_path = work / "bindings.toml"
            write_bindings(bindings_path, bindings)
            server = FramecastServer(
                data_dir=data_dir,
                certificates=make_certificates(work / "certs"),
                workers=1,
                extra_arguments=["--models", str(bindings_path), "--torch-threads", str(arguments.threads)],
            )
            server_started = time.perf_counter()
            server.start()
            print(f"server ready on {server.url} in {time.perf_counter() - server_started:.1f}s", flush=True)
        client = server.client() if server is not None else None
        processes = server_processes(server) if server is not None else {}
        scratch = work / "scratch"
        scratch.mkdir()
        try:
            for case in cases:
                print(
                    f"{case.family.label}: {case.family.endpoint} at {case.render_size[0]}x{case.render_size[1]}, "
                    f"1 warm-up + {arguments.repeats} runs per side ...",
                    flush=True,
                )
                results.append(measure_family(case, client, processes, arguments.repeats, arguments.poll_s, scratch))
                gc.collect()  # drop this family's pipelines before the next loads
        finally:
            if client is not None:
                client.close()
        if server is not None:
            server.stop()
            for result in results:
                result.breakdowns = [job_breakdown(data_dir / "framecast.db", job) for job in result.jobs]
    finally:
        if server is not None:
            server.stop()
        if arguments.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report(results, with_jobs=not arguments.no_server)
    print(f"\ntorch threads {arguments.threads}, {os.cpu_count()} CPUs, total {time.perf_counter() - started:.0f}s")
    elapsed = time.perf_counter() - started
    print(
        f"CPU pressure: some task waited for a CPU during {100 * (cpu_stall_s() - stall_before) / elapsed:.0f} % of "
        "the run (Linux PSI; more than a few % means other work competed for the CPUs: rerun on a quiet machine)"
    )
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        config = {key: str(value) for key, value in vars(arguments).items() if key != "json"}
        arguments.json.write_text(
            json.dumps({"config": config, "results": [asdict(result) for result in results]}, indent=2) + "\n"
        )
        print(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
