"""Tiny random-weight diffusers pipelines, built offline for tests and the `tiny` binding.

The pipelines have the real component layout (same classes, same `model_index.json`), but
the widths and depths are shrunk so that a whole 81-frame job runs in about a second on a
CPU. Every size-limiting config value (`rope_max_seq_len`, the 512-token text context, the
257-token CLIP context) stays at the real model's value, so the tiny model accepts the same
frame counts and aspect ratios as the real one; only the render size has to be scaled down
(see `WanImageToVideoEngine(render_scale=...)`).

Nothing here touches a model hub: tokenizers and image processors are constructed from
vocabularies written in code, and every model from an explicit config.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Bump when a recipe changes, so that existing builds are rebuilt instead of reused.
FORMAT_VERSION = 1
MARKER_NAME = "framecast-tiny.json"

_CHARS = string.ascii_letters + string.digits + string.punctuation
# Whole-word pieces so that test prompts tokenize to a few ids, like real prompts do.
_WORDS = [
    "a",
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "on",
    "with",
    "video",
    "dance",
    "monkey",
    "cat",
    "dog",
    "walk",
    "run",
    "camera",
    "slow",
    "fast",
    "bird",
    "sky",
    "snow",
]


def _t5_tokenizer() -> Any:
    """SentencePiece-style Unigram tokenizer with T5's special ids (pad=0, eos=1, unk=2), 211 ids."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in _CHARS] + [("\u2581" + c, -4.0) for c in _CHARS]
    pieces += [("\u2581" + w, -1.0) for w in _WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def _umt5_encoder() -> Any:
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=256,  # > the tokenizer's 211 ids
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return UMT5EncoderModel(config).eval()  # type: ignore[no-untyped-call]


def _clip_vision(hidden: int) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    # 32 px in 2 px patches gives 16x16+1 = 257 image tokens, the same context length as CLIP ViT-H/14 at 224 px.
    config = CLIPVisionConfig(
        hidden_size=hidden,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=2,
        intermediate_size=16,
    )
    return CLIPVisionModel(config).eval()  # type: ignore[no-untyped-call]


def _clip_image_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(crop_size=32, size=32)


def _wan_vae() -> Any:
    from diffusers import AutoencoderKLWan

    # Three spatial downsamples (x8) and two temporal ones (x4), like the real VAE; only the widths shrink.
    return AutoencoderKLWan(  # type: ignore[no-untyped-call]
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def _wan21_i2v() -> tuple[type[Any], dict[str, Any]]:
    """Wan 2.1 I2V layout (`Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`), shrunk to ~0.1 M parameters."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    heads, head_dim, clip_hidden = 2, 12, 4
    transformer = WanTransformer3DModel(  # type: ignore[no-untyped-call]
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=head_dim,
        in_channels=36,  # 16 noise latents + 4 mask + 16 image-condition latents
        out_channels=16,
        text_dim=32,  # = the UMT5 d_model
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        image_dim=clip_hidden,
        # The real model has separate image K/V projections of width heads*head_dim; with them the attention
        # processor splits off the image tokens by assuming exactly 512 text tokens, so the pipeline's default
        # max_sequence_length=512 must be used, as with the real model.
        added_kv_proj_dim=heads * head_dim,
        # Real value: the RoPE table must cover the patch grid of 832x480 (52 patches wide) and larger.
        rope_max_seq_len=1024,
    )
    components: dict[str, Any] = {
        "vae": _wan_vae(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=5.0),  # type: ignore[no-untyped-call]
        "text_encoder": _umt5_encoder(),
        "tokenizer": _t5_tokenizer(),
        "transformer": transformer,
        "transformer_2": None,
        "image_encoder": _clip_vision(clip_hidden),
        "image_processor": _clip_image_processor(),
    }
    return WanImageToVideoPipeline, components


# name -> recipe returning (pipeline class, constructor kwargs). Add more families here.
RECIPES: dict[str, Callable[[], tuple[type[Any], dict[str, Any]]]] = {
    "wan21_i2v": _wan21_i2v,
}


def _is_complete(path: Path, name: str) -> bool:
    try:
        marker = json.loads((path / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("format") == FORMAT_VERSION
        and marker.get("recipe") == name
        and (path / "model_index.json").is_file()
    )


def _build_one(name: str, target: Path) -> None:
    import diffusers
    import torch
    import transformers

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it 0700, and it becomes the published directory
        # Fixed seed for reproducible weights, without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            pipeline_class, components = RECIPES[name]()
            pipeline = pipeline_class(**components)
        pipeline.save_pretrained(tmp)
        marker = {
            "format": FORMAT_VERSION,
            "recipe": name,
            "pipeline": pipeline_class.__name__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "note": "random weights, for tests only",
        }
        # The marker is written last, inside the temp dir: a target with a valid marker is always complete.
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        if target.exists() and not _is_complete(target, name):
            # A stale build (old format, or from before this code wrote markers): move it aside first, because
            # rename(2) cannot replace a non-empty directory.
            stale = Path(tempfile.mkdtemp(prefix=f".{name}.stale-", dir=target.parent))
            os.replace(target, stale / name)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same build first; its result is as good as ours.
            if not _is_complete(target, name):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_tiny_models(directory: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build the tiny pipelines into `directory/<name>` and return `{name: path}`.

    `names` defaults to every recipe in `RECIPES`. A pipeline whose directory already holds a
    complete build (a `framecast-tiny.json` marker with the current format version) is not
    rebuilt. Each build goes to a temporary directory next to the target and is renamed into
    place, so a crash never leaves a half-written model where a complete one is expected.
    Building one takes well under a second on a CPU (plus the torch/diffusers import).

    Raises:
        KeyError: an unknown recipe name.
        OSError: the directory cannot be written.
    """
    selected = list(RECIPES) if names is None else names
    unknown = [name for name in selected if name not in RECIPES]
    if unknown:
        raise KeyError(f"unknown tiny model recipe(s) {unknown}; known: {sorted(RECIPES)}")
    directory.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for name in selected:
        target = directory / name
        if not _is_complete(target, name):
            _build_one(name, target)
        built[name] = target
    return built
