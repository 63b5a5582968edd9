"""FramePack: does the cost per section stay flat as num_frames grows?

FramePack makes a video in sections of `latent_window_size` latent frames (36 video frames at the default 9).
Each section is denoised with a fixed-size history context (1 + 2 + 16 latent frames), so the denoising cost
per section should not depend on how many sections came before; what can grow is everything that touches the
whole video so far. This script runs the tiny random-weight FramePack pipeline through framecast's FramePack
engine (`build_engine` + `generate`, one torch thread by default) at num_frames giving 1, 2, 4 and 8 sections,
interleaved, each configuration --repeats times after one discarded warm-up, and reports medians.

Two modes per section count:

  plain     `engine.generate(request)` with no section callback (what bench_engines.py's engine side runs).
  previews  with the callback the server's engine process installs when the binding's `previews` option is on
            (the default): after every section the video so far is converted to uint8 frames and encoded as an
            MP4 (libx264, crf 26, as `EngineHost` does), so the last section re-encodes the whole video.

Columns, per mode (seconds; "/sec" = divided by the section count):

  total      generate, median
  s/sec      total / sections
  ratio      s/sec relative to the 1-section run of the same mode (1.00 = flat)
  best       the same ratio from the fastest run of each configuration (noise on a shared machine only adds time)
  denoise    time inside the transformer's forward (forward hooks), per section
  decode     time inside `vae.decode`, per section; the first section decodes its own 9-10 latent frames, every
             later one decodes 18 (its own plus the overlap it blends into the history)
  preview    (previews mode) time in the preview MP4 encodes, per section
  other      the rest per section: prompt and image encoding (once per job, so it shrinks per section), the
             scheduler, latent bookkeeping, blending the history and the final conversion to uint8 frames (whole
             video), and in previews mode the per-section conversion of the video so far

Reading it: denoise/section should stay flat; decode/section rises from 1 to 2 sections (18 vs 9 latent frames
per decode) and then stays flat; preview/section grows linearly with the section count (the encode work is
quadratic in the video length). The tiny model's denoiser is cheap, so VAE and encode costs weigh far more here
than at full size on a GPU; read the shape of each column, not the absolute share.

A measurement script, not a test: it prints numbers and never fails on them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.measure import cpu_stall_s, median, quiet_offline_torch, table  # noqa: E402

SEED = 1234
PROMPT = "a cat walking in the snow"
FRAMES_PER_SECOND = 30

MODES = ("plain", "previews")


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    size = int(width), int(height)
    if min(size) < 16 or any(side % 16 for side in size):
        raise argparse.ArgumentTypeError(f"--size {text!r}: width and height must be multiples of 16, >= 16")
    return size


@dataclass
class Timers:
    """Seconds spent in the denoiser, the VAE decoder and the preview encodes during one generate."""

    denoise_s: float = 0.0
    decode_s: float = 0.0
    preview_s: float = 0.0
    decodes: int = 0
    previews: int = 0

    def reset(self) -> None:
        self.denoise_s = self.decode_s = self.preview_s = 0.0
        self.decodes = self.previews = 0


@contextmanager
def instrumented(pipe: Any, timers: Timers) -> Iterator[None]:
    """Time the transformer (forward hooks) and `vae.decode` for one generate.

    The engine's section tap wraps `vae.decode` on the instance for the length of a call and deletes its wrapper
    afterwards, so the timing wrapper is put on the instance before every call (the tap wraps it in turn).
    """
    started: list[float] = []

    def before(_module: Any, _args: Any) -> None:
        started.append(time.perf_counter())

    def after(_module: Any, _args: Any, _output: Any) -> None:
        timers.denoise_s += time.perf_counter() - started.pop()

    handles = [pipe.transformer.register_forward_pre_hook(before), pipe.transformer.register_forward_hook(after)]
    decode: Callable[..., Any] = pipe.vae.decode

    def timed_decode(*args: Any, **kwargs: Any) -> Any:
        begin = time.perf_counter()
        try:
            return decode(*args, **kwargs)
        finally:
            timers.decode_s += time.perf_counter() - begin
            timers.decodes += 1

    pipe.vae.decode = timed_decode
    try:
        yield
    finally:
        pipe.vae.__dict__.pop("decode", None)
        for handle in handles:
            handle.remove()


@dataclass
class Row:
    mode: str
    sections: int
    num_frames: int
    total_s: list[float] = field(default_factory=list)
    denoise_s: list[float] = field(default_factory=list)
    decode_s: list[float] = field(default_factory=list)
    preview_s: list[float] = field(default_factory=list)
    decodes: int = 0
    frames_out: int = 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="1,2,4,8", help="section counts to run (default 1,2,4,8)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps per section (default 25, as fal's)")
    parser.add_argument(
        "--size", type=parse_size, default=(112, 64), help="render WIDTHxHEIGHT, multiples of 16 (default 112x64)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per configuration (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--f1", action="store_true", help="FramePack F1 (vanilla, forward) sampling")
    parser.add_argument("--no-previews", action="store_true", help="skip the previews mode")
    parser.add_argument("--json", type=Path, help="also write every sample as JSON here")
    arguments = parser.parse_args()
    try:
        counts = sorted({int(part) for part in arguments.sections.split(",") if part.strip()})
    except ValueError:
        parser.error(f"--sections {arguments.sections!r}: comma-separated integers")
    if not counts or counts[0] < 1 or arguments.steps < 1 or arguments.repeats < 1 or arguments.threads < 1:
        parser.error("--sections, --steps, --repeats and --threads must be >= 1")
    modes = ["plain"] if arguments.no_previews else list(MODES)

    quiet_offline_torch(arguments.threads)
    from PIL import Image

    from framecast.bindings import ModelBinding
    from framecast.engines.base import GenerationRequest, Section
    from framecast.engines.factory import build_engine
    from framecast.engines.framepack import framepack_sections
    from framecast.engines.tiny_models import build_tiny_models
    from framecast.engines.video import encode_mp4
    from framecast.worker.engine_process import PREVIEW_CRF

    work = Path(tempfile.mkdtemp(prefix="framecast-bench-framepack-"))
    started, stall_before = time.perf_counter(), cpu_stall_s()
    try:
        print(f"building the tiny FramePack model in {work} ...", flush=True)
        weights = build_tiny_models(work / "tiny", ["framepack"])["framepack"]
        engine_name = "diffusers-framepack-f1" if arguments.f1 else "diffusers-framepack"
        binding = ModelBinding(
            endpoint_id="fal-ai/framepack", engine=engine_name, weights=str(weights), device="cpu", dtype="float32"
        )
        engine: Any = build_engine(binding)
        engine.load()
        pipe = engine.pipeline
        window = engine.settings.latent_window_size
        frames_per_section = window * pipe.vae_scale_factor_temporal
        width, height = arguments.size
        image = Image.new("RGB", (160, 90), (30, 120, 200))

        def request_for(sections: int) -> Any:
            num_frames = sections * frames_per_section
            assert framepack_sections(num_frames, window, pipe.vae_scale_factor_temporal) == sections
            return GenerationRequest(
                image=image,
                prompt=PROMPT,
                width=width,
                height=height,
                num_frames=num_frames,
                frames_per_second=FRAMES_PER_SECOND,
                num_inference_steps=arguments.steps,
                seed=SEED,
                guidance_scale=10.0,
                options={"true_cfg_scale": 1.0},
            )

        timers = Timers()
        preview_path = work / "preview.mp4"

        def on_section(section: Section) -> None:
            begin = time.perf_counter()
            encode_mp4(section.frames, frames_per_second=section.frames_per_second, path=preview_path, crf=PREVIEW_CRF)
            timers.preview_s += time.perf_counter() - begin
            timers.previews += 1

        def run(sections: int, mode: str) -> tuple[float, Any]:
            timers.reset()
            callback = on_section if mode == "previews" else None
            with instrumented(pipe, timers):
                begin = time.perf_counter()
                result = engine.generate(request_for(sections), lambda _p: None, lambda _line: None, callback)
                return time.perf_counter() - begin, result

        rows = {(mode, count): Row(mode, count, count * frames_per_section) for mode in modes for count in counts}
        print(
            f"{engine_name} at {width}x{height}, {arguments.steps} steps/section, {frames_per_section} frames/section;"
            f" warm-up, then {arguments.repeats} x sections {counts} x {modes} ...",
            flush=True,
        )
        for mode in modes:
            run(1, mode)  # warm-up
        for _ in range(arguments.repeats):
            for count in counts:
                for mode in modes:
                    total_s, result = run(count, mode)
                    row = rows[(mode, count)]
                    row.total_s.append(total_s)
                    row.denoise_s.append(timers.denoise_s)
                    row.decode_s.append(timers.decode_s)
                    row.preview_s.append(timers.preview_s)
                    row.decodes, row.frames_out = timers.decodes, int(result.frames.shape[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for mode in modes:
        print()
        title = "plain: generate without a section callback"
        if mode == "previews":
            title = "previews: an MP4 of the video so far after every section, as the server's engine process"
        print(f"{title} (seconds, medians; /sec = per section)")
        headers = ["sections", "frames", "total", "s/sec", "ratio", "best", "denoise/sec", "decode/sec"]
        headers += ["preview/sec", "other/sec"] if mode == "previews" else ["other/sec"]
        baseline = median(rows[(mode, counts[0])].total_s) / counts[0]
        best_baseline = min(rows[(mode, counts[0])].total_s) / counts[0]
        table_rows = []
        for count in counts:
            row = rows[(mode, count)]
            total, denoise, decode = median(row.total_s), median(row.denoise_s), median(row.decode_s)
            preview = median(row.preview_s) if mode == "previews" else 0.0
            per_section = total / count
            cells: list[Any] = [count, row.frames_out, f"{total:.2f}", f"{per_section:.3f}"]
            cells += [f"{per_section / baseline:.2f}", f"{min(row.total_s) / count / best_baseline:.2f}"]
            cells += [f"{denoise / count:.3f}", f"{decode / count:.3f}"]
            if mode == "previews":
                cells.append(f"{preview / count:.3f}")
            cells.append(f"{(total - denoise - decode - preview) / count:.3f}")
            table_rows.append(cells)
        print(table(headers, table_rows))
        if counts[0] != 1:
            print(f"(ratio is relative to the {counts[0]}-section run)")
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
            json.dumps({"config": config, "rows": [asdict(row) for row in rows.values()]}, indent=2) + "\n"
        )
        print(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
