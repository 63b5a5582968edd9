"""Several GPUs for one job: the full-size Wan 2.1 I2V 14B transformer at 1 GPU vs N GPUs (Ulysses).

Two parts, both offline (random weights, no downloads):

timing   The full-size transformer (`bench.gpu_timing.WAN21_I2V_14B`, 16.4 B parameters) is built with random
         weights, the same on every rank (one seed), and fed the real conditioning shapes of `--case`
         (wan480: 832x480, 81 frames = 32,760 video tokens; wan720: 1280x720 = 75,600). A step is two forwards
         (CFG), as `WanImageToVideoPipeline` runs it. First on 1 GPU, then on N GPUs with
         `transformer.enable_parallelism(ContextParallelConfig(ulysses_degree=N))`, each rank in its own process,
         joined through `framecast.engines.parallel.join_group` (NCCL for tensors, gloo for the per-step verdict)
         and ending every step with the engine's `StepAgreement` broadcast, as a served job does. Reported: the
         median ms per step, the speed-up (1-GPU ms / N-GPU ms), the tokens each rank's blocks see, the peak GPU
         memory of every rank (`torch.cuda.max_memory_allocated`, weights included) and max |N-GPU - 1-GPU| of
         the last step's output (bf16 kernels on other shapes: small, not zero).
engine   The real `ContextParallelEngine` on the tiny offline Wan pipeline (`framecast dev tiny-models`), float32,
         across the same devices: frames compared with the single-device engine's (expected identical), a cancel
         at step 2, then another job on the same group. Prints OK or FAILED per check.

Usage:
  python bench/bench_context_parallel.py                         # every visible GPU (needs >= 2), wan480
  python bench/bench_context_parallel.py --gpus 4 --case wan720 --repeats 5
  python bench/bench_context_parallel.py --layers 8              # quicker: 8 of 40 blocks (and less memory)
  python bench/bench_context_parallel.py --smoke                 # both parts on 2 CPU ranks (gloo), tiny widths

Without two CUDA GPUs (and without --smoke) it says so and exits 0. A measurement script, not a test: it
prints numbers and never fails on them (the engine part's FAILED lines are for a person to read).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.gpu_timing import CASES, WAN21_I2V_14B, default_dtype, wan_inputs  # noqa: E402
from bench.measure import median, quiet_offline_torch, table  # noqa: E402

WAN_CASES = {case.key: case for case in CASES if case.family == "wan"}
# --smoke: the 14B layout at tiny widths, so that the real input shapes (text 4096, CLIP 1280) still fit.
SMOKE_CONFIG = {
    **WAN21_I2V_14B,
    "num_attention_heads": 4,
    "attention_head_dim": 16,
    "added_kv_proj_dim": 64,
    "ffn_dim": 64,
    "num_layers": 2,
}
SMOKE_SIZE = (64, 32, 5)  # width, height, frames: 2 latent frames x 2x4 patches = 16 tokens
WEIGHTS_SEED = 0


@dataclass(frozen=True)
class RunConfig:
    case: str
    world_size: int
    devices: list[str]
    layers: int | None
    dtype: str
    warmup: int
    repeats: int
    smoke: bool
    store_port: int = 0


@dataclass
class RankResult:
    rank: int
    step_ms: list[float]
    peak_gib: float | None
    tokens_per_rank: int
    output: Any = None  # rank 0's last output, as a float32 numpy array
    error: str | None = None


@dataclass
class Measurement:
    world_size: int
    ranks: list[RankResult] = field(default_factory=list)


def transformer_config(run: RunConfig) -> dict[str, Any]:
    if run.smoke:
        return dict(SMOKE_CONFIG)
    config = dict(WAN21_I2V_14B)
    if run.layers is not None:
        config["num_layers"] = min(run.layers, config["num_layers"])
    return config


def rank_main(run: RunConfig, rank: int, results: Any) -> None:
    """One rank of one timing run: build, (join the group and enable Ulysses,) warm up, time, report."""
    try:
        results.put(time_rank(run, rank))
    except Exception as error:  # reported, not raised: the parent prints it
        results.put(RankResult(rank, [], None, -1, error=f"{type(error).__name__}: {error}"))


def time_rank(run: RunConfig, rank: int) -> RankResult:
    quiet_offline_torch(1)
    import torch
    from diffusers import ContextParallelConfig, WanTransformer3DModel

    from framecast.engines.base import Progress
    from framecast.engines.parallel import (
        ForwardCounter,
        StepAgreement,
        TCPStore,
        cpu_device_count_workaround,
        join_group,
    )

    device = torch.device(run.devices[rank])
    dtype = getattr(torch, run.dtype)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    if run.world_size > 1:
        # The parent process holds the store; every rank is a client of it.
        store = TCPStore("127.0.0.1", run.store_port, run.world_size, is_master=False)
        join_group(store, rank, run.world_size, device)
    torch.manual_seed(WEIGHTS_SEED)  # the same random weights on every rank
    with torch.device(device), default_dtype(dtype):
        model = WanTransformer3DModel(**transformer_config(run))
    model = model.eval().requires_grad_(False)
    if run.world_size > 1:
        with cpu_device_count_workaround(device):
            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=run.world_size))
    case = WAN_CASES[run.case]
    size = SMOKE_SIZE if run.smoke else (case.width, case.height, case.num_frames)
    forwards = wan_inputs(case, size, str(device), dtype)  # seeded: the same inputs on every rank
    tokens: list[int] = []
    # proj_out's input is still split: diffusers gathers the sequence after it.
    model.proj_out.register_forward_pre_hook(lambda _module, args: tokens.append(int(args[0].shape[1])))
    counter = ForwardCounter()
    agreement = StepAgreement((lambda _progress: None) if rank == 0 else None, counter)
    output = None
    step_ms: list[float] = []
    total = run.warmup + run.repeats
    with torch.inference_mode():
        for index in range(total):
            if cuda:
                torch.cuda.synchronize()
                if index == run.warmup:
                    torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for arguments in forwards:
                output = model(**arguments)[0]
            if run.world_size > 1:
                agreement(Progress(step=index + 1, total_steps=total, elapsed_s=0.0))
            if cuda:
                torch.cuda.synchronize()
            if index >= run.warmup:
                step_ms.append(1000 * (time.perf_counter() - started))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    # numpy, not a tensor: torch shares tensors between processes through memory the sender must keep alive.
    last = output.float().cpu().numpy() if (rank == 0 and output is not None) else None
    if run.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return RankResult(rank, step_ms, peak, tokens[0] if tokens else -1, output=last)


def measure(run: RunConfig) -> Measurement:
    """Run `run` with one process per rank; rank results in rank order."""
    from framecast.engines.parallel import TCPStore

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    store = None
    if run.world_size > 1:
        # Rank 0's store must listen before the others connect; the parent picks the port and hands it over.
        store = TCPStore("127.0.0.1", 0, run.world_size, is_master=True, wait_for_workers=False)
        run = RunConfig(**{**asdict(run), "store_port": store.port})
    processes = [context.Process(target=rank_main, args=(run, rank, results)) for rank in range(run.world_size)]
    for process in processes:
        process.start()
    collected = [results.get() for _ in processes]
    for process in processes:
        process.join()
    del store
    return Measurement(run.world_size, sorted(collected, key=lambda result: result.rank))


def report(single: Measurement, parallel: Measurement, run: RunConfig) -> dict[str, Any]:
    failures = [result for measurement in (single, parallel) for result in measurement.ranks if result.error]
    for result in failures:
        print(f"rank {result.rank} failed: {result.error}")
    if failures:
        return {"errors": [result.error for result in failures]}
    base_ms = median(single.ranks[0].step_ms)
    rows = []
    for measurement in (single, parallel):
        step_ms = median(measurement.ranks[0].step_ms)
        peaks = [result.peak_gib for result in measurement.ranks]
        rows.append(
            [
                f"{measurement.world_size} device(s)",
                f"{measurement.ranks[0].tokens_per_rank:,}",
                f"{step_ms:.0f}",
                f"{min(measurement.ranks[0].step_ms):.0f}",
                f"{base_ms / step_ms:.2f}x",
                " / ".join("-" if peak is None else f"{peak:.1f}" for peak in peaks),
            ]
        )
    headers = ["run", "tokens per rank", "ms/step", "min ms", "speed-up", "peak GiB per rank"]
    print(table(headers, rows))
    difference = float(abs(parallel.ranks[0].output - single.ranks[0].output).max())
    print(f"max |{run.world_size}-device - 1-device| of the last step's output: {difference:.3g} ({run.dtype})")
    return {
        "speedup": base_ms / median(parallel.ranks[0].step_ms),
        "max_abs_difference": difference,
        "runs": [
            {
                "world_size": measurement.world_size,
                "ranks": [
                    {key: value for key, value in asdict(result).items() if key != "output"}
                    for result in measurement.ranks
                ],
            }
            for measurement in (single, parallel)
        ],
    }


# -- the engine check ---------------------------------------------------------------------------------------------


def engine_check(devices: list[str]) -> dict[str, bool]:
    """The real ContextParallelEngine on the tiny Wan pipeline across `devices`; check name -> passed."""
    quiet_offline_torch(1)
    import numpy as np
    from PIL import Image

    from framecast.bindings import ModelBinding
    from framecast.engines.base import GenerationCancelled, GenerationRequest, Progress
    from framecast.engines.parallel import ContextParallelEngine
    from framecast.engines.tiny_models import build_tiny_models
    from framecast.engines.wan import WanImageToVideoEngine

    checks: dict[str, bool] = {}
    with tempfile.TemporaryDirectory(prefix="framecast-cp-") as directory:
        weights = build_tiny_models(Path(directory), ["wan21_i2v"])["wan21_i2v"]
        image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8))
        request = GenerationRequest(
            image=image, prompt="a lighthouse", width=832, height=480, num_frames=9,
            frames_per_second=16, num_inference_steps=4, seed=7,
        )  # fmt: skip

        def quiet(message: str, level: str = "INFO", /) -> None:
            pass

        single = WanImageToVideoEngine(weights=str(weights), device=devices[0], dtype="float32", render_scale=1 / 8)
        single.load()
        reference = single.generate(request, lambda _: None, quiet).frames
        del single
        failures: list[str] = []
        binding = ModelBinding(
            "fal-ai/wan-i2v", "diffusers-wan-i2v", str(weights), device=devices[0], dtype="float32",
            render_scale=1 / 8, options={"context_parallel": {"devices": devices}},
        )  # fmt: skip
        engine = ContextParallelEngine(binding, on_group_failure=failures.append)
        started = time.perf_counter()
        engine.load()
        print(f"engine: {len(devices)} ranks loaded in {time.perf_counter() - started:.1f}s", flush=True)
        try:
            frames = engine.generate(request, lambda _: None, quiet).frames
            checks["frames identical to one device"] = bool(np.array_equal(frames, reference))
            if not checks["frames identical to one device"]:
                print(f"  max |difference| {np.abs(frames.astype(int) - reference.astype(int)).max()} (of 255)")

            def cancel_at_2(progress: Progress) -> None:
                if progress.step == 2:
                    raise GenerationCancelled()

            try:
                engine.generate(request, cancel_at_2, quiet)
                checks["cancel at step 2"] = False
            except GenerationCancelled:
                checks["cancel at step 2"] = True
            again = engine.generate(request, lambda _: None, quiet).frames
            checks["next job after the cancel"] = bool(np.array_equal(again, reference))
            checks["no group failure"] = not failures
        finally:
            engine.close()
    for name, passed in checks.items():
        print(f"  {'OK    ' if passed else 'FAILED'} {name}")
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, help="GPUs for the parallel run (default: every visible GPU)")
    parser.add_argument("--case", choices=sorted(WAN_CASES), default="wan480")
    parser.add_argument("--layers", type=int, help="keep N of the 40 blocks (default: all)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--smoke", action="store_true", help="2 CPU ranks over gloo, tiny widths, 1 step")
    parser.add_argument("--no-engine-check", action="store_true", help="time only")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    arguments = parser.parse_args()
    if arguments.layers is not None and arguments.layers < 1:
        parser.error("--layers must be >= 1")

    import torch

    if arguments.smoke:
        devices, dtype, warmup, repeats = ["cpu", "cpu"], "float32", 0, 1
        print("device: 2 CPU ranks over gloo (smoke run: the timings mean nothing)", flush=True)
    else:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = arguments.gpus or count
        if count < 2 or wanted < 2 or wanted > count:
            print(
                f"context parallelism needs at least 2 CUDA GPUs (torch {torch.__version__} sees {count}"
                f"{'' if arguments.gpus is None else f', --gpus {arguments.gpus}'}); nothing was timed. "
                "--smoke runs both parts on 2 CPU ranks."
            )
            return 0
        devices = [f"cuda:{index}" for index in range(wanted)]
        dtype, warmup, repeats = arguments.dtype, arguments.warmup, arguments.repeats
        names = ", ".join(torch.cuda.get_device_name(index) for index in range(wanted))
        print(f"devices: {names}; torch {torch.__version__}", flush=True)

    def run_for(world_size: int) -> RunConfig:
        return RunConfig(
            case=arguments.case, world_size=world_size, devices=devices[:world_size], layers=arguments.layers,
            dtype=dtype, warmup=warmup, repeats=repeats, smoke=arguments.smoke,
        )  # fmt: skip

    depth = "tiny widths" if arguments.smoke else f"{arguments.layers or 40} of 40 blocks"
    print(f"timing {arguments.case} ({depth}, {dtype}): 1 device, then {len(devices)} ...", flush=True)
    single = measure(run_for(1))
    parallel = measure(run_for(len(devices)))
    print()
    results: dict[str, Any] = {"case": arguments.case, "devices": devices, "dtype": dtype, "layers": arguments.layers}
    results["timing"] = report(single, parallel, run_for(len(devices)))
    if not arguments.no_engine_check:
        print(f"\nengine check: ContextParallelEngine on the tiny Wan pipeline across {', '.join(devices)}", flush=True)
        results["engine_check"] = engine_check(devices)
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
