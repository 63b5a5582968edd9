"""Queue benchmarks against a real `framecast serve --models tiny` over TLS, measured side by side in one run.

a. Request-cycle latency (submit -> poll status every 20 ms -> result) vs the raw engine work
   (`WanImageToVideoEngine.generate` + `encode_mp4`) on the same tiny model, one torch thread on both sides.
b. Status-poll throughput: P concurrent pollers on one shared `httpx.AsyncClient` against a job held
   IN_PROGRESS by the `block_at_step=1` test fault.

A measurement script, not a test: it prints numbers and never fails on them. Only 127.0.0.1/localhost is
contacted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.measure import cpu_stall_s, process_cpu_s, table  # noqa: E402
from tests.e2e.server import FramecastServer, make_certificates, wait_for  # noqa: E402

ENDPOINT = "fal-ai/wan-i2v"
QUEUE = f"/queue/{ENDPOINT}"
CYCLE_POLL_S = 0.02
CYCLE_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 10.0
POLL_WARMUP_S = 2.0
RAW_MARKER = "BENCH_RAW_RESULT "

# The endpoint input and what the endpoint maps it to (framecast.endpoints.plan_wan_i2v): 480p 16:9 -> 832x480.
IMAGE_SIZE, IMAGE_COLOR = (96, 64), (30, 120, 200)
PROMPT = "a cat walking in the snow"
SEED = 1234
WAN_INPUT: dict[str, Any] = {
    "prompt": PROMPT,
    "resolution": "480p",
    "aspect_ratio": "16:9",
    "num_inference_steps": 2,
    "num_frames": 81,
    "frames_per_second": 16,
    "seed": SEED,
    "guide_scale": 5.0,
    "shift": 5.0,
}
ENGINE_WIDTH, ENGINE_HEIGHT = 832, 480


# -- small helpers ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def png_data_uri() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", IMAGE_SIZE, IMAGE_COLOR).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def child_environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("FRAMECAST_")}
    environment["HF_HUB_OFFLINE"] = "1"
    return environment


# -- a. request cycle ------------------------------------------------------------------------------


@dataclass
class Cycle:
    total_s: float
    submit_s: float  # POST until its response
    queued_s: float  # submit response until a status poll first saw IN_PROGRESS (or COMPLETED)
    running_s: float  # from there until a poll saw COMPLETED
    result_s: float  # GET result
    server_inference_s: float | None  # metrics.inference_time: engine generate, without the MP4 encode
    polls: int
    download_s: float = 0.0  # GET of the result's video URL, with run_cycle(download=True); included in total_s
    output_bytes: int = 0  # the video's size, with download=True


def run_cycle(client: httpx.Client, image_uri: str, *, download: bool = False) -> Cycle:
    """Submit, poll status every 20 ms until COMPLETED, GET the result; with `download`, then GET its video too."""
    started = time.perf_counter()
    response = client.post(f"/queue/{ENDPOINT}", json={**WAN_INPUT, "image_url": image_uri})
    response.raise_for_status()
    request_id = response.json()["request_id"]
    submitted = time.perf_counter()
    status_url = f"{QUEUE}/requests/{request_id}/status"
    seen_running: float | None = None
    polls = 0
    deadline = started + CYCLE_TIMEOUT_S
    while True:
        poll_started = time.perf_counter()
        body = client.get(status_url, params={"logs": "0"}).json()
        polls += 1
        now = time.perf_counter()
        if body["status"] != "IN_QUEUE" and seen_running is None:
            seen_running = now
        if body["status"] == "COMPLETED":
            break
        if now > deadline:
            raise TimeoutError(f"{request_id} did not complete within {CYCLE_TIMEOUT_S}s")
        time.sleep(max(0.0, CYCLE_POLL_S - (now - poll_started)))
    completed = now
    if body.get("error"):
        raise RuntimeError(f"{request_id} failed: {body['error']}")
    result = client.get(f"{QUEUE}/requests/{request_id}")
    result.raise_for_status()
    resulted = time.perf_counter()
    output_bytes = 0
    if download:
        video = client.get(result.json()["video"]["url"])
        video.raise_for_status()
        output_bytes = len(video.content)
    finished = time.perf_counter()
    assert seen_running is not None
    return Cycle(
        total_s=finished - started,
        submit_s=submitted - started,
        queued_s=seen_running - submitted,
        running_s=completed - seen_running,
        result_s=resulted - completed,
        server_inference_s=(body.get("metrics") or {}).get("inference_time"),
        polls=polls,
        download_s=finished - resulted,
        output_bytes=output_bytes,
    )


def measure_cycles(server: FramecastServer, runs: int, warmup: int) -> list[Cycle]:
    image_uri = png_data_uri()
    with server.client() as client:
        for _ in range(warmup):
            run_cycle(client, image_uri)
        return [run_cycle(client, image_uri) for _ in range(runs)]


def raw_child(weights: str, runs: int, warmup: int) -> None:
    """In its own process, like the server's engine process: one torch thread, the engine loaded once."""
    import torch

    torch.set_num_threads(1)
    from PIL import Image

    from framecast.engines.base import GenerationRequest
    from framecast.engines.video import encode_mp4
    from framecast.engines.wan import WanImageToVideoEngine
    from framecast.schemas.wan import WAN_DEFAULT_NEGATIVE_PROMPT

    engine = WanImageToVideoEngine(weights=weights, device="cpu", dtype="float32", render_scale=1 / 8)
    engine.load()
    request = GenerationRequest(
        image=Image.open(io.BytesIO(base64.b64decode(png_data_uri().split(",", 1)[1]))).convert("RGB"),
        prompt=PROMPT,
        negative_prompt=WAN_DEFAULT_NEGATIVE_PROMPT,
        width=ENGINE_WIDTH,
        height=ENGINE_HEIGHT,
        num_frames=int(WAN_INPUT["num_frames"]),
        frames_per_second=int(WAN_INPUT["frames_per_second"]),
        num_inference_steps=int(WAN_INPUT["num_inference_steps"]),
        seed=SEED,
        guidance_scale=float(WAN_INPUT["guide_scale"]),
        shift=float(WAN_INPUT["shift"]),
    )
    samples: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-raw-") as directory:
        for index in range(warmup + runs):
            started = time.perf_counter()
            result = engine.generate(request, lambda _progress: None, lambda *_line_and_level: None)
            generated = time.perf_counter()
            encode_mp4(result.frames, frames_per_second=result.frames_per_second, path=Path(directory) / "out.mp4")
            finished = time.perf_counter()
            if index >= warmup:
                samples.append({"total_s": finished - started, "generate_s": generated - started})
    print(RAW_MARKER + json.dumps({"samples": samples, "torch_threads": torch.get_num_threads()}), flush=True)


def measure_raw(weights: Path, runs: int, warmup: int, log_path: Path) -> dict[str, Any]:
    arguments = [sys.executable, str(Path(__file__).resolve()), "--raw-child", str(weights)]
    arguments += ["--runs", str(runs), "--warmup", str(warmup)]
    with log_path.open("ab") as log:
        completed = subprocess.run(
            arguments, stdout=subprocess.PIPE, stderr=log, env=child_environment(), timeout=600, check=True
        )
    for line in completed.stdout.decode().splitlines():
        if line.startswith(RAW_MARKER):
            result: dict[str, Any] = json.loads(line[len(RAW_MARKER) :])
            return result
    raise RuntimeError(f"the raw child printed no result; see {log_path}")


# -- b. status-poll throughput -----------------------------------------------------------------------


@dataclass
class PollRow:
    client: str
    logs: int
    pollers: int
    interval_s: float
    duration_s: float
    offered_rps: float
    achieved_rps: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    client_cpu_pct: float  # this process (the pollers), % of one core
    server_api_cpu_pct: float  # the `framecast serve` process (API + event loop), % of one core
    api_cpu_ms_per_request: float  # that process's CPU time per answered request: client-independent cost
    warmup_errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


async def poll_load(
    server: FramecastServer,
    request_id: str,
    *,
    pollers: int,
    interval_s: float,
    duration_s: float,
    logs: int,
    client_module: str = "httpx",
) -> PollRow:
    # httpx2 (pydantic's fork, in the venv through huggingface_hub) has the same API and a linear-time pool.
    http: Any = importlib.import_module(client_module)
    url = f"{QUEUE}/requests/{request_id}/status"
    params = {"logs": str(logs)}
    limits = http.Limits(max_connections=pollers, max_keepalive_connections=pollers)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    warmup_errors = 0
    loop_start = time.perf_counter()
    measure_start = loop_start + POLL_WARMUP_S
    measure_end = measure_start + duration_s
    assert server.process is not None
    server_pid = server.process.pid

    # The same API key as server.client(): without it every poll is a 401.
    headers = {"Authorization": f"Key {server.api_key}"} if server.api_key else {}
    async with http.AsyncClient(
        base_url=server.url, verify=str(server.ca_path), limits=limits, timeout=REQUEST_TIMEOUT_S, headers=headers
    ) as client:

        async def poller(offset_s: float) -> None:
            nonlocal warmup_errors
            await asyncio.sleep(offset_s)  # unsynchronised, like independent fal-client users
            while True:
                started = time.perf_counter()
                if started >= measure_end:
                    return
                counted = started >= measure_start
                error: str | None = None
                try:
                    response = await client.get(url, params=params)
                    if response.status_code != 202 or response.json().get("status") != "IN_PROGRESS":
                        error = f"HTTP {response.status_code}"
                except http.HTTPError as exc:
                    error = type(exc).__name__
                elapsed = time.perf_counter() - started
                if counted:
                    latencies.append(elapsed)
                    if error:
                        errors[error] += 1
                elif error:
                    warmup_errors += 1
                await asyncio.sleep(max(0.0, interval_s - elapsed))

        tasks = [asyncio.create_task(poller(random.uniform(0, interval_s))) for _ in range(pollers)]
        # Let the connections open during the warm-up, then take CPU readings over the measured window.
        await asyncio.sleep(max(0.0, measure_start - time.perf_counter()))
        client_cpu, server_cpu, wall = time.process_time(), process_cpu_s(server_pid), time.perf_counter()
        await asyncio.sleep(max(0.0, measure_end - time.perf_counter()))
        client_cpu = time.process_time() - client_cpu
        server_cpu = process_cpu_s(server_pid) - server_cpu
        wall = time.perf_counter() - wall
        _, pending = await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + interval_s + 5)
        for task in pending:
            task.cancel()

    return PollRow(
        client=client_module,
        logs=logs,
        pollers=pollers,
        interval_s=interval_s,
        duration_s=duration_s,
        offered_rps=round(pollers / interval_s, 1),
        achieved_rps=round((len(latencies) - sum(errors.values())) / duration_s, 1),
        requests=len(latencies),
        errors=sum(errors.values()),
        p50_ms=ms(percentile(latencies, 50)),
        p99_ms=ms(percentile(latencies, 99)),
        max_ms=ms(max(latencies, default=float("nan"))),
        client_cpu_pct=round(100 * client_cpu / wall, 1),
        server_api_cpu_pct=round(100 * server_cpu / wall, 1),
        api_cpu_ms_per_request=round(1000 * server_cpu / max(1, len(latencies)), 2),
        warmup_errors=warmup_errors,
        error_kinds=dict(errors),
    )


def hold_job(server: FramecastServer) -> str:
    with server.client() as client:
        response = client.post(
            f"/queue/{ENDPOINT}",
            json={**WAN_INPUT, "image_url": png_data_uri()},
            headers={"X-Framecast-Test-Fault": "block_at_step=1"},
        )
        response.raise_for_status()
        request_id: str = response.json()["request_id"]

        def holding() -> bool:
            body = client.get(f"{QUEUE}/requests/{request_id}/status", params={"logs": "1"}).json()
            return body["status"] == "IN_PROGRESS" and any("holding" in log["message"] for log in body["logs"] or [])

        wait_for(holding, timeout_s=60, interval_s=0.1, what=f"{request_id} to hold at step 1")
    return request_id


def release_job(server: FramecastServer, request_id: str) -> None:
    with server.client() as client:
        client.put(f"{QUEUE}/requests/{request_id}/cancel")

        def completed() -> bool:
            body = client.get(f"{QUEUE}/requests/{request_id}/status", params={"logs": "0"}).json()
            return bool(body["status"] == "COMPLETED")

        wait_for(completed, timeout_s=30, interval_s=0.1, what=f"{request_id} to be cancelled")


# -- main ------------------------------------------------------------------------------------------------


def summarize_latency(name: str, totals: list[float]) -> list[Any]:
    return [name, len(totals), ms(percentile(totals, 50)), ms(percentile(totals, 99)), ms(max(totals))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="measured request cycles and raw runs (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="discarded warm-up runs on each side (default 1)")
    parser.add_argument("--pollers", type=int, default=200, help="concurrent status pollers, logs=0 (default 200)")
    parser.add_argument("--poll-interval-s", type=float, default=0.1, help="each poller's interval (default 0.1)")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured poll window, logs=0 (default 10)")
    parser.add_argument("--logs-pollers", type=int, default=50, help="pollers for the logs=1 row (default 50)")
    parser.add_argument("--logs-duration-s", type=float, default=5.0, help="window for the logs=1 row (default 5)")
    parser.add_argument(
        "--client",
        choices=["httpx", "httpx2"],
        default="httpx",
        help="HTTP client library of the pollers (default httpx; httpx2 has a linear-time connection pool)",
    )
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs) and print its path")
    parser.add_argument("--raw-child", metavar="WEIGHTS", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.raw_child:
        raw_child(arguments.raw_child, arguments.runs, arguments.warmup)
        return 0
    if min(arguments.runs, arguments.pollers, arguments.logs_pollers) < 1 or arguments.poll_interval_s <= 0:
        parser.error("--runs and the poller counts must be >= 1, --poll-interval-s > 0")

    stall_start, wall_start = cpu_stall_s(), time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="framecast-bench-"))
    log_path = work / "bench.log"
    server: FramecastServer | None = None
    try:
        print(f"building tiny models and certificates in {work} ...", flush=True)
        tiny = work / "tiny"
        with log_path.open("ab") as log:
            subprocess.run(
                [sys.executable, "-m", "framecast", "dev", "tiny-models", str(tiny)],
                check=True, stdout=log, stderr=log, env=child_environment(), timeout=300,
            )  # fmt: skip
        certificates = make_certificates(work / "certs")
        data_dir = work / "server" / "data"
        shutil.copytree(tiny, data_dir / "models" / "tiny")
        server = FramecastServer(data_dir=data_dir, certificates=certificates, workers=1)
        started = time.perf_counter()
        server.start()
        print(f"server ready on {server.url} in {time.perf_counter() - started:.1f}s", flush=True)

        print(f"a. {arguments.warmup} warm-up + {arguments.runs} request cycles ...", flush=True)
        cycles = measure_cycles(server, arguments.runs, arguments.warmup)

        print("b. holding one job IN_PROGRESS for the pollers ...", flush=True)
        request_id = hold_job(server)
        rows = []
        for logs, pollers, duration in (
            (0, arguments.pollers, arguments.duration_s),
            (1, arguments.logs_pollers, arguments.logs_duration_s),
        ):
            print(
                f"b. logs={logs}: {pollers} pollers every {arguments.poll_interval_s}s for {duration}s ...", flush=True
            )
            rows.append(
                asyncio.run(
                    poll_load(
                        server,
                        request_id,
                        pollers=pollers,
                        interval_s=arguments.poll_interval_s,
                        duration_s=duration,
                        logs=logs,
                        client_module=arguments.client,
                    )
                )
            )
        release_job(server, request_id)
        server.stop()

        print(f"a. raw engine: {arguments.warmup} warm-up + {arguments.runs} runs (server stopped) ...", flush=True)
        raw = measure_raw(tiny / "wan21_i2v", arguments.runs, arguments.warmup, log_path)
    finally:
        if server is not None:
            server.stop()
        if arguments.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # Time some task on this machine waited for a CPU, as % of the run: high means other work shared it.
    cpu_pressure_pct = round(100 * (cpu_stall_s() - stall_start) / (time.perf_counter() - wall_start), 1)
    framecast_totals = [cycle.total_s for cycle in cycles]
    raw_totals = [sample["total_s"] for sample in raw["samples"]]
    ratio = percentile(framecast_totals, 50) / percentile(raw_totals, 50)

    def p50(values: list[float]) -> float:
        return ms(percentile(values, 50))

    server_inference = [cycle.server_inference_s for cycle in cycles if cycle.server_inference_s is not None]
    breakdown = {
        "submit_ms": p50([cycle.submit_s for cycle in cycles]),
        "queued_ms": p50([cycle.queued_s for cycle in cycles]),
        "running_ms": p50([cycle.running_s for cycle in cycles]),
        "result_ms": p50([cycle.result_s for cycle in cycles]),
        "server_inference_ms": p50(server_inference),
        "raw_generate_ms": p50([sample["generate_s"] for sample in raw["samples"]]),
        "status_polls_per_cycle": percentile([float(cycle.polls) for cycle in cycles], 50),
    }

    print()
    print("a. request cycle vs raw engine (ms; p99 of few runs is close to max)")
    print(
        table(
            ["", "n", "p50", "p99", "max"],
            [
                summarize_latency("framecast submit->COMPLETED->result", framecast_totals),
                summarize_latency("raw generate+encode_mp4", raw_totals),
            ],
        )
    )
    print(f"ratio framecast_p50 / raw_p50 = {ratio:.3f}  (target <= 1.10)")
    print("cycle p50 breakdown (ms): " + ", ".join(f"{key}={value}" for key, value in breakdown.items()))
    print()
    print("b. status-poll throughput (latency in ms, CPU in % of one core)")
    columns = ["client", "logs", "pollers", "offered/s", "achieved/s", "requests", "errors", "p50", "p99", "max"]
    columns += ["client_cpu", "api_cpu", "api_cpu_ms/req"]
    fields = [
        "client",
        "logs",
        "pollers",
        "offered_rps",
        "achieved_rps",
        "requests",
        "errors",
        "p50_ms",
        "p99_ms",
        "max_ms",
    ]
    fields += ["client_cpu_pct", "server_api_cpu_pct", "api_cpu_ms_per_request"]
    print(table(columns, [[getattr(row, name) for name in fields] for row in rows]))
    for row in rows:
        if row.error_kinds or row.warmup_errors:
            print(f"   logs={row.logs} errors: {row.error_kinds}, warm-up errors: {row.warmup_errors}")
    print(f"\nCPU pressure during the run: {cpu_pressure_pct} % (tasks waiting for a CPU; high = a shared machine)")

    if arguments.json:
        report = {
            "config": {key: value for key, value in vars(arguments).items() if key not in ("json", "raw_child")},
            "cpu_count": os.cpu_count(),
            "cpu_pressure_pct": cpu_pressure_pct,
            "request_cycle": {
                "framecast": {
                    "p50_ms": ms(percentile(framecast_totals, 50)),
                    "p99_ms": ms(percentile(framecast_totals, 99)),
                    "max_ms": ms(max(framecast_totals)),
                    "cycles": [asdict(cycle) for cycle in cycles],
                },
                "raw": {
                    "p50_ms": ms(percentile(raw_totals, 50)),
                    "p99_ms": ms(percentile(raw_totals, 99)),
                    "max_ms": ms(max(raw_totals)),
                    "torch_threads": raw["torch_threads"],
                    "samples": raw["samples"],
                },
                "ratio_p50": round(ratio, 4),
                "target_ratio": 1.10,
                "breakdown_p50": breakdown,
            },
            "status_polls": [asdict(row) for row in rows],
        }
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
