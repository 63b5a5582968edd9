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


def _clip_tokenizer() -> Any:
    """Byte-level BPE with no merges: the 256 byte symbols, their `</w>` forms and the two specials, 514 ids."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def _llama_tokenizer() -> Any:
    """Llama-style BPE with byte fallback and no merges, 448 ids; pads with `<unk>` (id 0) like HunyuanVideo's."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{byte:02X}>": 3 + byte for byte in range(256)})
    vocab["\u2581"] = len(vocab)
    for char in _CHARS:
        vocab[char] = len(vocab)
        vocab["\u2581" + char] = len(vocab)
    return LlamaTokenizer(vocab=vocab, merges=[], pad_token="<unk>")


# 32 px in 2 px patches gives 16x16+1 = 257 image tokens: the same context length as CLIP ViT-H/14 at 224 px.
_CLIP_IMAGE_SIZE, _CLIP_PATCH = 32, 2
_CLIP_TOKENS = (_CLIP_IMAGE_SIZE // _CLIP_PATCH) ** 2 + 1


def _clip_vision(
    hidden: int, *, image_size: int = _CLIP_IMAGE_SIZE, patch_size: int = _CLIP_PATCH, with_projection: bool = False
) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=hidden,
        projection_dim=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
        intermediate_size=16,
    )
    model_class = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    return model_class(config).eval()  # type: ignore[no-untyped-call]


def _clip_image_processor(size: int = _CLIP_IMAGE_SIZE) -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(crop_size=size, size=size)


def _wan_vae() -> Any:
    from diffusers import AutoencoderKLWan

    # Three spatial downsamples (x8) and two temporal ones (x4), like the real VAE; only the widths shrink.
    return AutoencoderKLWan(  # type: ignore[no-untyped-call]
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def _flow_unipc(flow_shift: float) -> Any:
    """The flow-matching UniPC scheduler of the Wan 2.2 and SkyReels-V2 repos."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(  # type: ignore[no-untyped-call]
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift
    )


_WAN_HEADS, _WAN_HEAD_DIM = 2, 12


def _wan_transformer_config(**overrides: Any) -> dict[str, Any]:
    """The tiny Wan-family DiT config (also SkyReels-V2's); `overrides` adds or replaces keys."""
    config: dict[str, Any] = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": _WAN_HEADS,
        "attention_head_dim": _WAN_HEAD_DIM,
        "in_channels": 36,  # 16 noise latents + 4 mask + 16 image-condition latents
        "out_channels": 16,
        "text_dim": 32,  # = the UMT5 d_model
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,  # first-block caching needs a head and a tail block
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        # Real value: the RoPE table must cover the patch grid of 832x480 (52 patches wide) and larger.
        "rope_max_seq_len": 1024,
    }
    config.update(overrides)
    return config


def _wan_transformer(**overrides: Any) -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**_wan_transformer_config(**overrides))  # type: ignore[no-untyped-call]


def _wan21_pipeline(shift: float, **transformer_overrides: Any) -> tuple[type[Any], dict[str, Any]]:
    """The Wan 2.1 image-to-video components: CLIP image tokens besides the text, one transformer."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    clip_hidden = 4
    transformer = _wan_transformer(
        image_dim=clip_hidden,
        # The real model has separate image K/V projections of width heads*head_dim; with them the attention
        # processor splits off the image tokens by assuming exactly 512 text tokens, so the pipeline's default
        # max_sequence_length=512 must be used, as with the real model.
        added_kv_proj_dim=_WAN_HEADS * _WAN_HEAD_DIM,
        **transformer_overrides,
    )
    components: dict[str, Any] = {
        "vae": _wan_vae(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=shift),  # type: ignore[no-untyped-call]
        "text_encoder": _umt5_encoder(),
        "tokenizer": _t5_tokenizer(),
        "transformer": transformer,
        "transformer_2": None,
        "image_encoder": _clip_vision(clip_hidden),
        "image_processor": _clip_image_processor(),
    }
    return WanImageToVideoPipeline, components


def _wan21_i2v() -> tuple[type[Any], dict[str, Any]]:
    """Wan 2.1 I2V layout (`Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`), shrunk to ~0.1 M parameters."""
    return _wan21_pipeline(shift=5.0)


def _wan21_flf2v() -> tuple[type[Any], dict[str, Any]]:
    """Wan 2.1 first-last-frame layout (`Wan-AI/Wan2.1-FLF2V-14B-720P-diffusers`), ~0.1 M parameters.

    As Wan 2.1 I2V, but CLIP encodes the first and the last frame, and the transformer adds a learned position
    embedding over both images' tokens: `pos_embed_seq_len = 2 * 257 = 514`, the real value. `last_image` is
    therefore required: with one image, 257 tokens cannot be viewed as 514 (a RuntimeError in the transformer).
    """
    return _wan21_pipeline(shift=16.0, pos_embed_seq_len=2 * _CLIP_TOKENS)


def _wan22_i2v_a14b() -> tuple[type[Any], dict[str, Any]]:
    """Wan 2.2 I2V-A14B layout (`Wan-AI/Wan2.2-I2V-A14B-Diffusers`): two experts, no CLIP.

    `transformer` denoises the high-noise steps (t >= 0.9 * 1000) and `transformer_2` the rest, with
    `guidance_scale_2`. The image conditions only through the 20 mask + latent channels.
    """
    from diffusers import WanImageToVideoPipeline

    components: dict[str, Any] = {
        "vae": _wan_vae(),
        "scheduler": _flow_unipc(5.0),
        "text_encoder": _umt5_encoder(),
        "tokenizer": _t5_tokenizer(),
        "transformer": _wan_transformer(),  # high-noise expert
        "transformer_2": _wan_transformer(),  # low-noise expert
        "image_encoder": None,
        "image_processor": None,
        "boundary_ratio": 0.9,
    }
    return WanImageToVideoPipeline, components


def _framepack() -> tuple[type[Any], dict[str, Any]]:
    """FramePack layout: `lllyasviel/FramePackI2V_HY` (transformer) + `hunyuanvideo-community/HunyuanVideo` (VAE,
    text encoders, scheduler) + `lllyasviel/flux_redux_bfl` (SigLIP).

    One directory serves both FramePack (`sampling_type="inverted_anti_drifting"`) and FramePack-F1
    (`"vanilla"`, `lllyasviel/FramePack_F1_I2V_HY_20250503`), whose transformers share one architecture. The
    real context lengths are kept: 256 Llama tokens after the template crop, CLIP-L's 77 tokens, and
    SigLIP-so400m/384's 27x27 = 729 image tokens. The transformer has one dual-stream and one single-stream
    block, so first-block caching has a head and a tail.

    With the character-level Llama tokenizer the chat template alone is ~500 tokens, so the 256 tokens left after
    the 95-token crop are all template text: the prompt reaches the tiny model only through CLIP's pooled
    embedding (with the real tokenizer it reaches both).
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    llama_hidden, clip_hidden, siglip_hidden, latent_channels = 16, 8, 16, 16
    transformer = HunyuanVideoFramepackTransformer3DModel(  # type: ignore[no-untyped-call]
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=llama_hidden,
        pooled_projection_dim=clip_hidden,
        rope_axes_dim=(2, 4, 4),  # sums to attention_head_dim
        image_condition_type=None,
        has_image_proj=True,
        image_proj_dim=siglip_hidden,
        has_clean_x_embedder=True,
    )
    # Four blocks: three spatial downsamples (x8) and two temporal ones (x4), like the real VAE. One channel wide:
    # its full-resolution 3D convolutions dominate a tiny run on a CPU (one section at 160x96 took 0.3 s with
    # this VAE and 3.8 s with 8 channels).
    vae = AutoencoderKLHunyuanVideo(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(1, 1, 1, 1),
        layers_per_block=1,
        norm_num_groups=1,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )
    # The pipeline takes hidden_states[-3] (it skips the last two layers), so three layers.
    llama = LlamaModel(  # type: ignore[no-untyped-call]
        LlamaConfig(
            vocab_size=512,  # > the tokenizer's 448 ids
            hidden_size=llama_hidden,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            hidden_act="silu",
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
    ).eval()
    clip_text = CLIPTextModel(  # type: ignore[no-untyped-call]
        CLIPTextConfig(
            vocab_size=514,
            hidden_size=clip_hidden,
            projection_dim=clip_hidden,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
        )
    ).eval()
    siglip = SiglipVisionModel(  # type: ignore[no-untyped-call]
        SiglipVisionConfig(
            hidden_size=siglip_hidden,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=54,  # 27x27 patches of 2 px = 729 tokens, as SigLIP-so400m at 384 px in 14 px patches
            patch_size=2,
        )
    ).eval()
    components: dict[str, Any] = {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),  # type: ignore[no-untyped-call]
        "text_encoder": llama,
        "tokenizer": _llama_tokenizer(),
        "text_encoder_2": clip_text,
        "tokenizer_2": _clip_tokenizer(),
        "image_encoder": siglip,
        "feature_extractor": SiglipImageProcessor(size={"height": 54, "width": 54}),
    }
    return HunyuanVideoFramepackPipeline, components


def _svd() -> tuple[type[Any], dict[str, Any]]:
    """Stable Video Diffusion layout (`stabilityai/stable-video-diffusion-img2vid-xt`, 25 frames)."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )

    image_embed_dim, time_embed_dim = 32, 32
    unet = UNetSpatioTemporalConditionModel(  # type: ignore[no-untyped-call]
        sample_size=32,
        in_channels=8,  # 4 noise latents + 4 image latents
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 32),  # GroupNorm's 32 groups make 32 the narrowest width
        layers_per_block=1,
        cross_attention_dim=image_embed_dim,
        num_attention_heads=(2, 2),
        addition_time_embed_dim=time_embed_dim,
        # fps, motion bucket and noise augmentation, each embedded with addition_time_embed_dim
        projection_class_embeddings_input_dim=3 * time_embed_dim,
        num_frames=25,  # img2vid-xt; the pipeline's default frame count
    )
    # Four blocks, three downsamples: vae_scale_factor 8, as the real VAE (with two blocks, 128x80 px would give
    # 64x40 latents, 16x as many as 16x10, and the UNet's attention would explode). The encoder's GroupNorm has 32
    # groups, so 32 channels is the narrowest width.
    vae = AutoencoderKLTemporalDecoder(  # type: ignore[no-untyped-call]
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
    )
    scheduler = EulerDiscreteScheduler(  # type: ignore[no-untyped-call]
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )
    components: dict[str, Any] = {
        "vae": vae,
        # SVD resizes the image to a hard-coded 224x224 before CLIP; 32 px patches keep that at 7x7+1 tokens.
        "image_encoder": _clip_vision(image_embed_dim, image_size=224, patch_size=32, with_projection=True),
        "unet": unet,
        "scheduler": scheduler,
        "feature_extractor": _clip_image_processor(224),
    }
    return StableVideoDiffusionPipeline, components


def _skyreels_v2_df() -> tuple[type[Any], dict[str, Any]]:
    """SkyReels-V2 diffusion-forcing layout (`Skywork/SkyReels-V2-DF-1.3B-540P-Diffusers`), for image-to-video.

    No image encoder: the image conditions as clean prefix latents. Long videos are generated in chunks of
    `base_num_frames` that overlap by `overlap_history` frames. In diffusers 0.42.1 the last chunk must be a whole
    one, or the denoising loop raises IndexError: with base 97 and overlap 17 (25 and 5 latent frames) 177 frames
    work (97 + 80) but 121 do not. That is the pipeline's doing, not this model's.
    """
    from diffusers import SkyReelsV2DiffusionForcingImageToVideoPipeline, SkyReelsV2Transformer3DModel

    transformer = SkyReelsV2Transformer3DModel(  # type: ignore[no-untyped-call]
        **_wan_transformer_config(in_channels=16, inject_sample_info=True)  # the 1.3B model embeds the fps
    )
    components: dict[str, Any] = {
        "vae": _wan_vae(),
        "scheduler": _flow_unipc(8.0),  # SkyReels-V2's DF default shift (its docs suggest 5.0 for image-to-video)
        "text_encoder": _umt5_encoder(),
        "tokenizer": _t5_tokenizer(),
        "transformer": transformer,
    }
    return SkyReelsV2DiffusionForcingImageToVideoPipeline, components


# name -> recipe returning (pipeline class, constructor kwargs). Add more families here.
RECIPES: dict[str, Callable[[], tuple[type[Any], dict[str, Any]]]] = {
    "wan21_i2v": _wan21_i2v,
    "wan21_flf2v": _wan21_flf2v,
    "wan22_i2v_a14b": _wan22_i2v_a14b,
    "framepack": _framepack,
    "svd": _svd,
    "skyreels_v2_df": _skyreels_v2_df,
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
