"""GPU timing of the full-size denoisers with random weights: no download, no text encoders, no VAE.

The full-size transformer is built from its published config (docs: /work/shared/design/engines.md section 5)
directly on the GPU with random weights in --dtype (bfloat16 by default), and fed conditioning tensors of the
real shapes instead of running the text and image encoders:

  wan480     Wan 2.1 I2V 14B (`WanTransformer3DModel`), 832x480, 81 frames: latents (1, 36, 21, 60, 104)
             (16 noise + 4 mask + 16 image-condition channels), UMT5 prompt embeds (1, 512, 4096), CLIP ViT-H
             image embeds (1, 257, 1280). One step = two forwards (conditional, then unconditional with the
             negative prompt's embeds), as `WanImageToVideoPipeline` does at guidance_scale > 1.
  wan720     the same at 1280x720, 81 frames: latents (1, 36, 21, 90, 160).
  framepack  FramePackI2V_HY 13B (`HunyuanVideoFramepackTransformer3DModel`), 640x640, one section of
             latent_window_size 9 with its history context as the pipeline builds it: latents (1, 16, 9, 80, 80),
             clean latents (1, 16, 2, 80, 80) (start image + 1x history), 2x history (1, 16, 2, 80, 80), 4x history
             (1, 16, 16, 80, 80), Llama prompt embeds (1, 256, 4096) with an attention mask of 64 real tokens,
             CLIP-L pooled (1, 768), SigLIP image embeds (1, 729, 1152), distilled guidance 10. One step = one
             forward: fal's `cfg_scale` defaults to 1, so the pipeline runs no true-CFG pass.

Each model: build, one warm-up step (--warmup), then --repeats timed steps (torch.cuda.synchronize around each);
the median is reported with the peak GPU memory (`torch.cuda.max_memory_allocated`, weights included) and an
estimate of a whole job's denoising time, steps x ms/step: Wan at fal's default 30 steps, FramePack at 25
steps per section x 5 sections (fal's default 180 frames at 30 fps). Text encoders, VAE encode/decode, the
scheduler and MP4 encoding are not in it. --layers N truncates the depth (Wan: N of 40 blocks; FramePack: N of
20 dual-stream and 2N of 40 single-stream blocks) for a quick try or to fit a smaller GPU; the "full depth"
column then scales the block time up linearly (an estimate: embeddings and the output head are not scaled).

Without CUDA the script says a GPU is needed and exits 0, except:
  --meta   builds every config on the meta device (no memory, runs anywhere, CPU included) and prints parameter
           counts and weight sizes at --dtype; engines.md section 5 lists 16.40 B for Wan 2.1 I2V 14B and
           12.87 B for FramePackI2V_HY.
  --smoke  runs the whole timing path once per architecture on the CPU (or the GPU, if there is one) with 1 block
           per stack, tiny latents and one step (float32 on the CPU), to check the shapes and the code without a
           GPU; its timings mean nothing (about a minute on one CPU thread).

A measurement script, not a test: it prints numbers and never fails on them. See bench/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.measure import median, table  # noqa: E402

# Published transformer configs (engines.md section 5; diffusers scripts/convert_wan_to_diffusers.py and
# lllyasviel/FramePackI2V_HY's config.json).
WAN21_I2V_14B: dict[str, Any] = {
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "attention_head_dim": 128,
    "num_attention_heads": 40,
    "num_layers": 40,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "in_channels": 36,
    "out_channels": 16,
    "patch_size": (1, 2, 2),
    "qk_norm": "rms_norm_across_heads",
    "cross_attn_norm": True,
    "eps": 1e-6,
    "text_dim": 4096,
}
FRAMEPACK_I2V_HY: dict[str, Any] = {
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "num_layers": 20,
    "num_single_layers": 40,
    "num_refiner_layers": 2,
    "mlp_ratio": 4.0,
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "patch_size_t": 1,
    "guidance_embeds": True,
    "has_clean_x_embedder": True,
    "has_image_proj": True,
    "image_proj_dim": 1152,
    "pooled_projection_dim": 768,
    "qk_norm": "rms_norm",
    "rope_axes_dim": (16, 56, 56),
    "rope_theta": 256.0,
    "text_embed_dim": 4096,
}
# Parameter counts in engines.md section 5 (billions, meta-device instantiation).
DOCUMENTED_PARAMS_B = {"wan": 16.40, "framepack": 12.87}

WAN_TEXT_TOKENS, WAN_CLIP_TOKENS = 512, 257
FRAMEPACK_TEXT_TOKENS, FRAMEPACK_PROMPT_TOKENS, FRAMEPACK_SIGLIP_TOKENS = 256, 64, 729
FRAMEPACK_HISTORY_SIZES = (1, 2, 16)  # 1x, 2x and 4x history latent frames (inverted anti-drifting)
FRAMEPACK_GUIDANCE = 10.0  # fal's default distilled guidance; the pipeline embeds guidance * 1000
WAN_JOB_STEPS = 30  # fal-ai/wan-i2v's default num_inference_steps
FRAMEPACK_STEPS, FRAMEPACK_SECTIONS = 25, 5  # 25 steps per section; 180 frames = 5 sections of 36


@dataclass(frozen=True)
class ModelCase:
    key: str
    label: str
    family: str  # "wan" or "framepack"
    width: int
    height: int
    num_frames: int  # video frames (Wan); FramePack renders one section of latent_window_size latents
    forwards_per_step: int
    job_steps: int
    job_note: str


CASES = [
    ModelCase("wan480", "Wan 2.1 I2V 14B", "wan", 832, 480, 81, 2, WAN_JOB_STEPS, "30 steps x CFG"),
    ModelCase("wan720", "Wan 2.1 I2V 14B", "wan", 1280, 720, 81, 2, WAN_JOB_STEPS, "30 steps x CFG"),
    ModelCase(
        "framepack",
        "FramePackI2V_HY",
        "framepack",
        640,
        640,
        9,
        1,
        FRAMEPACK_STEPS * FRAMEPACK_SECTIONS,
        "5 sections x 25 steps",
    ),
]
CASE_KEYS = [case.key for case in CASES]
# --smoke: every code path with tiny latents (sizes in pixels, multiples of 16).
SMOKE_SIZES = {"wan": (64, 32, 5), "framepack": (64, 64, 2)}


def model_class(family: str) -> Any:
    from diffusers import HunyuanVideoFramepackTransformer3DModel, WanTransformer3DModel

    return WanTransformer3DModel if family == "wan" else HunyuanVideoFramepackTransformer3DModel


def config_for(family: str, layers: int | None) -> dict[str, Any]:
    """The published config, with the block stacks truncated to `layers` (None = full depth)."""
    if family == "wan":
        config = dict(WAN21_I2V_14B)
        if layers is not None:
            config["num_layers"] = min(layers, config["num_layers"])
        return config
    config = dict(FRAMEPACK_I2V_HY)
    if layers is not None:
        config["num_layers"] = min(layers, config["num_layers"])
        config["num_single_layers"] = min(2 * layers, config["num_single_layers"])
    return config


def block_count(config: dict[str, Any]) -> int:
    return int(config["num_layers"]) + int(config.get("num_single_layers", 0))


@contextmanager
def default_dtype(dtype: Any) -> Iterator[None]:
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(family: str, layers: int | None, device: str, dtype: Any) -> Any:
    """Random weights created directly on `device` in `dtype` (RoPE tables stay in their own dtypes)."""
    import torch

    with torch.device(device), default_dtype(dtype):
        model = model_class(family)(**config_for(family, layers))
    return model.eval().requires_grad_(False)


# -- --meta --------------------------------------------------------------------------------------------


def meta_report(cases: list[ModelCase], layers: int | None, dtype_name: str) -> None:
    import torch

    element_size = torch.empty((), dtype=getattr(torch, dtype_name)).element_size()
    rows = []
    for family in dict.fromkeys(case.family for case in cases):
        started = time.perf_counter()
        with torch.device("meta"):
            model = model_class(family)(**config_for(family, layers))
        parameters = sum(parameter.numel() for parameter in model.parameters())
        config = config_for(family, layers)
        documented = DOCUMENTED_PARAMS_B[family] if layers is None else None
        rows.append(
            [
                type(model).__name__,
                f"{block_count(config)}",
                f"{parameters / 1e9:.3f}",
                f"{parameters:,}",
                f"{parameters * element_size / 2**30:.1f}",
                "-" if documented is None else f"{documented:.2f}",
                "-" if documented is None else ("yes" if abs(parameters / 1e9 - documented) < 0.01 else "NO"),
                f"{time.perf_counter() - started:.2f}",
            ]
        )
    print(f"meta-device instantiation (no weights allocated); weight size at {dtype_name}")
    headers = ["class", "blocks", "params B", "params", f"{dtype_name} GiB", "engines.md B", "within 0.01", "build s"]
    print(table(headers, rows))


# -- timing --------------------------------------------------------------------------------------------


def wan_inputs(case: ModelCase, size: tuple[int, int, int], device: str, dtype: Any) -> list[dict[str, Any]]:
    """The keyword arguments of each forward in one step: conditional, then unconditional."""
    import torch

    width, height, num_frames = size
    latent_frames = (num_frames - 1) // 4 + 1
    generator = torch.Generator(device=device).manual_seed(0)

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    latents = randn(1, 36, latent_frames, height // 8, width // 8)
    image_embeds = randn(1, WAN_CLIP_TOKENS, 1280)
    timestep = torch.tensor([999.0], device=device)
    return [
        {
            "hidden_states": latents,
            "timestep": timestep,
            "encoder_hidden_states": randn(1, WAN_TEXT_TOKENS, 4096),  # the prompt's, then the negative prompt's
            "encoder_hidden_states_image": image_embeds,
            "return_dict": False,
        }
        for _ in range(case.forwards_per_step)
    ]


def framepack_inputs(case: ModelCase, size: tuple[int, int, int], device: str, dtype: Any) -> list[dict[str, Any]]:
    """One forward of the first section of a one-section inverted anti-drifting job, as the pipeline calls it."""
    import torch

    width, height, window = size
    generator = torch.Generator(device=device).manual_seed(0)
    latent_height, latent_width = height // 8, width // 8

    def randn(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    # The pipeline's index layout: [prefix, padding (0 for the last section), window, 1x, 2x, 4x history].
    indices = torch.arange(0, 1 + window + sum(FRAMEPACK_HISTORY_SIZES), device=device)
    sizes = [1, window, *FRAMEPACK_HISTORY_SIZES]
    prefix, latent_indices, history_1x, history_2x, history_4x = indices.split(sizes)  # type: ignore[no-untyped-call]
    mask = torch.zeros(1, FRAMEPACK_TEXT_TOKENS, device=device, dtype=dtype)
    mask[:, :FRAMEPACK_PROMPT_TOKENS] = 1  # batch 1: the transformer keeps only the real prompt tokens
    arguments = {
        "hidden_states": randn(1, 16, window, latent_height, latent_width),
        "timestep": torch.tensor([999.0], device=device),
        "encoder_hidden_states": randn(1, FRAMEPACK_TEXT_TOKENS, 4096),
        "encoder_attention_mask": mask,
        "pooled_projections": randn(1, 768),
        "image_embeds": randn(1, FRAMEPACK_SIGLIP_TOKENS, 1152),
        "indices_latents": latent_indices,
        "guidance": torch.tensor([FRAMEPACK_GUIDANCE * 1000.0], device=device, dtype=dtype),
        "latents_clean": randn(1, 16, 1 + FRAMEPACK_HISTORY_SIZES[0], latent_height, latent_width),
        "indices_latents_clean": torch.cat([prefix, history_1x]),
        "latents_history_2x": randn(1, 16, FRAMEPACK_HISTORY_SIZES[1], latent_height, latent_width),
        "indices_latents_history_2x": history_2x,
        "latents_history_4x": randn(1, 16, FRAMEPACK_HISTORY_SIZES[2], latent_height, latent_width),
        "indices_latents_history_4x": history_4x,
        "return_dict": False,
    }
    return [arguments] * case.forwards_per_step


def first_block(model: Any) -> Any:
    return model.blocks[0] if hasattr(model, "blocks") else model.transformer_blocks[0]


@dataclass
class Timing:
    case: ModelCase
    size: tuple[int, int, int]
    blocks: int
    full_blocks: int
    parameters: int
    build_s: float
    video_tokens: int  # the sequence the first block sees (latent tokens, history included)
    step_ms: list[float]
    peak_gib: float | None
    weights_gib: float


def time_case(
    case: ModelCase, layers: int | None, device: str, dtype_name: str, warmup: int, repeats: int, smoke: bool
) -> Timing:
    import torch

    dtype = getattr(torch, dtype_name)
    cuda = device.startswith("cuda")
    size = SMOKE_SIZES[case.family] if smoke else (case.width, case.height, case.num_frames)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    model = build_model(case.family, layers, device, dtype)
    if cuda:
        torch.cuda.synchronize()
    build_s = time.perf_counter() - started
    parameters = sum(parameter.numel() for parameter in model.parameters())
    make_inputs: Callable[..., list[dict[str, Any]]] = wan_inputs if case.family == "wan" else framepack_inputs
    forwards = make_inputs(case, size, device, dtype)
    tokens: list[int] = []
    hook = first_block(model).register_forward_pre_hook(lambda _module, args: tokens.append(int(args[0].shape[1])))

    def step() -> None:
        for arguments in forwards:
            model(**arguments)

    timings: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(repeats):
            begin = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            timings.append(1000 * (time.perf_counter() - begin))
    hook.remove()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    timing = Timing(
        case=case,
        size=size,
        blocks=block_count(config_for(case.family, layers)),
        full_blocks=block_count(config_for(case.family, None)),
        parameters=parameters,
        build_s=build_s,
        video_tokens=tokens[0] if tokens else -1,
        step_ms=timings,
        peak_gib=peak,
        weights_gib=parameters * dtype.itemsize / 2**30,
    )
    return timing


def report(timings: list[Timing], dtype_name: str) -> None:
    headers = ["model", "size", "frames", "tokens", "blocks", "params B", "fwd/step", "ms/step", "min ms"]
    headers += ["full depth ms/step", "peak GiB", "weights GiB", "job", "est. job s", "build s"]
    rows = []
    for timing in timings:
        case = timing.case
        step_ms = median(timing.step_ms)
        full_ms = step_ms * timing.full_blocks / timing.blocks
        width, height, frames = timing.size
        frames_text = f"{frames}" if case.family == "wan" else f"{frames} lat"
        rows.append(
            [
                f"{case.key} ({case.label})",
                f"{width}x{height}",
                frames_text,
                f"{timing.video_tokens:,}",
                f"{timing.blocks}/{timing.full_blocks}",
                f"{timing.parameters / 1e9:.2f}",
                case.forwards_per_step,
                f"{step_ms:.0f}",
                f"{min(timing.step_ms):.0f}",
                f"{full_ms:.0f}" if timing.blocks != timing.full_blocks else "-",
                "-" if timing.peak_gib is None else f"{timing.peak_gib:.1f}",
                f"{timing.weights_gib:.1f}",
                case.job_note,
                f"{case.job_steps * full_ms / 1000:.0f}",
                f"{timing.build_s:.1f}",
            ]
        )
    print(f"one denoising step, {dtype_name}, median of the timed steps (ms); est. job s = job steps x ms/step")
    print("(at full depth; denoiser only: no text encoders, VAE, scheduler or MP4 encode)")
    print(table(headers, rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASE_KEYS), help=f"subset of {','.join(CASE_KEYS)} (all)")
    parser.add_argument("--layers", type=int, help="keep N blocks per stack (default: full depth)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads when the device is the CPU (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--meta", action="store_true", help="parameter counts on the meta device (runs anywhere)")
    parser.add_argument("--smoke", action="store_true", help="1 block per stack, tiny latents, CPU if no GPU")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    arguments = parser.parse_args()
    keys = [key.strip() for key in arguments.models.split(",") if key.strip()]
    unknown = sorted(set(keys) - set(CASE_KEYS))
    if unknown or not keys:
        parser.error(f"unknown --models {unknown}; choose from {','.join(CASE_KEYS)}")
    if (arguments.layers is not None and arguments.layers < 1) or min(arguments.repeats, arguments.threads) < 1:
        parser.error("--layers, --repeats and --threads must be >= 1")
    if arguments.warmup < 0:
        parser.error("--warmup must be >= 0")
    cases = [case for case in CASES if case.key in keys]

    import torch

    if arguments.meta:
        meta_report(cases, arguments.layers, arguments.dtype)
        return 0
    device, layers, dtype_name = arguments.device, arguments.layers, arguments.dtype
    warmup, repeats = arguments.warmup, arguments.repeats
    if arguments.smoke:
        # One case per architecture, one block per stack, one untimed-warm-up-free step.
        first_of_family: dict[str, ModelCase] = {}
        for case in cases:
            first_of_family.setdefault(case.family, case)
        cases = list(first_of_family.values())
        layers, warmup, repeats = 1, 0, 1
        if device.startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        if device == "cpu":
            dtype_name = "float32"  # bfloat16 matmuls are an order of magnitude slower on most CPUs
    elif device.startswith("cuda") and not torch.cuda.is_available():
        print(
            f"a CUDA GPU is needed to time the full-size models (torch {torch.__version__} sees none); "
            "nothing was timed. --meta prints the parameter counts on any machine, --smoke checks the code path "
            "on the CPU."
        )
        return 0
    if device.startswith("cuda"):
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    else:
        torch.set_num_threads(arguments.threads)
        print(f"device: {device} (smoke run: the timings mean nothing)", flush=True)
    timings = []
    for case in cases:
        depth = "full depth" if layers is None else f"{layers} block(s) per stack"
        print(f"{case.key}: building {case.label} ({depth}, {dtype_name}) on {device} ...", flush=True)
        timings.append(time_case(case, layers, device, dtype_name, warmup, repeats, arguments.smoke))
        gc.collect()  # the model is gone with time_case's frame; give its memory back before the next one
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print()
    report(timings, dtype_name)
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        records = [
            {
                "model": timing.case.key,
                "size": list(timing.size),
                "blocks": timing.blocks,
                "full_blocks": timing.full_blocks,
                "parameters": timing.parameters,
                "video_tokens": timing.video_tokens,
                "step_ms": timing.step_ms,
                "peak_gib": timing.peak_gib,
                "build_s": timing.build_s,
                "device": device,
                "dtype": dtype_name,
            }
            for timing in timings
        ]
        arguments.json.write_text(json.dumps(records, indent=2) + "\n")
        print(f"wrote {arguments.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
