from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from framecast.engines.tiny_models import FORMAT_VERSION, MARKER_NAME, RECIPES, build_tiny_models

NoNetwork = Callable[[], AbstractContextManager[None]]
ImageFactory = Callable[..., Image.Image]
# The recipes added after wan21_i2v; the tests below run each through its real pipeline.
NEW_RECIPES = ["wan21_flf2v", "wan22_i2v_a14b", "framepack", "svd", "skyreels_v2_df"]


def test_builds_offline_with_marker(tiny_models: dict[str, Path]) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert set(tiny_models) == set(RECIPES) == {"wan21_i2v", *NEW_RECIPES}
    path = tiny_models["wan21_i2v"]
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["format"] == FORMAT_VERSION
    assert marker["recipe"] == "wan21_i2v"
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"]
    assert index["image_encoder"] == ["transformers", "CLIPVisionModel"]
    assert index["text_encoder"] == ["transformers", "UMT5EncoderModel"]
    # Only the published directories are left in the parent: no temp or stale directories.
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(RECIPES)


def test_second_build_reuses_the_first(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["wan21_i2v"]
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*")}

    again = build_tiny_models(path.parent)

    assert again == tiny_models
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == stamps


def test_from_pretrained_loads_the_real_layout(
    wan_tiny_dir: Path, no_network: Callable[[], AbstractContextManager[None]]
) -> None:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    with no_network():
        pipe = WanImageToVideoPipeline.from_pretrained(wan_tiny_dir, dtype=torch.float32)
    config = pipe.transformer.config
    # The size-limiting values stay at the real model's, so documented sizes and frame counts work.
    assert config.rope_max_seq_len == 1024
    assert config.image_dim == pipe.image_encoder.config.hidden_size
    assert config.added_kv_proj_dim == config.num_attention_heads * config.attention_head_dim
    assert config.text_dim == pipe.text_encoder.config.d_model
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.shift == 5.0
    assert pipe.vae_scale_factor_spatial == 8
    assert pipe.vae_scale_factor_temporal == 4
    params = sum(p.numel() for m in (pipe.transformer, pipe.vae, pipe.text_encoder) for p in m.parameters())
    assert params < 1_000_000


def test_incomplete_build_is_replaced_with_identical_weights(
    tmp_path: Path, wan_tiny_dir: Path, no_network: Callable[[], AbstractContextManager[None]]
) -> None:
    stale = tmp_path / "wan21_i2v"
    stale.mkdir()
    (stale / "leftover.txt").write_text("from a crashed build")
    (stale / MARKER_NAME).write_text(json.dumps({"format": FORMAT_VERSION - 1, "recipe": "wan21_i2v"}))

    with no_network():
        built = build_tiny_models(tmp_path, ["wan21_i2v"])

    path = built["wan21_i2v"]
    assert path == stale
    assert not (path / "leftover.txt").exists()
    assert json.loads((path / MARKER_NAME).read_text())["format"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["wan21_i2v"]
    # Fixed seeds: a rebuild has byte-identical weights.
    for part in ("transformer", "vae", "text_encoder", "image_encoder"):
        (mine,) = (path / part).glob("*.safetensors")
        (theirs,) = (wan_tiny_dir / part).glob("*.safetensors")
        assert mine.read_bytes() == theirs.read_bytes(), part


def test_unknown_recipe_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="no-such-model"):
        build_tiny_models(tmp_path, ["no-such-model"])


# --- The other families: each is loaded with the real `from_pretrained` and run once, small. ---


@pytest.fixture
def load_tiny(tiny_models: dict[str, Path], no_network: NoNetwork) -> Callable[[str], Any]:
    """`load_tiny(name)`: the tiny pipeline `name`, loaded offline with the class its model_index.json names."""
    import diffusers
    import torch

    def load(name: str) -> Any:
        path = tiny_models[name]
        pipeline_class = getattr(diffusers, json.loads((path / "model_index.json").read_text())["_class_name"])
        with no_network():
            pipe = pipeline_class.from_pretrained(path, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return load


def generate(pipe: Any, **kwargs: Any) -> Any:
    """Two steps at seed 0; returns the frames as a (frames, height, width, 3) float array, checked finite."""
    import torch

    output = pipe(**kwargs, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    frames = np.asarray(output.frames[0])
    assert frames.ndim == 4 and frames.shape[-1] == 3
    assert np.isfinite(frames).all()
    return frames


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_builds_are_small_and_name_their_pipeline(tiny_models: dict[str, Path], name: str) -> None:
    path = tiny_models[name]
    marker = json.loads((path / MARKER_NAME).read_text())
    index = json.loads((path / "model_index.json").read_text())
    assert marker["recipe"] == name
    assert marker["pipeline"] == index["_class_name"]
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 8 * 2**20, size


def test_new_builds_are_reproducible(tmp_path: Path, tiny_models: dict[str, Path], no_network: NoNetwork) -> None:
    with no_network():
        again = build_tiny_models(tmp_path, NEW_RECIPES)
    for name in NEW_RECIPES:
        weights = sorted(f.relative_to(again[name]) for f in again[name].rglob("*.safetensors"))
        assert weights, name
        for relative in weights:
            assert (again[name] / relative).read_bytes() == (tiny_models[name] / relative).read_bytes(), relative


def test_wan21_flf2v_needs_and_uses_the_last_frame(load_tiny: Callable[[str], Any], make_image: ImageFactory) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = load_tiny("wan21_flf2v")
    clip = pipe.image_encoder.config
    clip_tokens = (clip.image_size // clip.patch_size) ** 2 + 1
    # The real FLF2V values: CLIP ViT-H/14's 257 tokens for each of the two frames.
    assert clip_tokens == 257
    assert pipe.transformer.config.pos_embed_seq_len == 2 * clip_tokens == 514
    assert pipe.transformer.config.rope_max_seq_len == 1024
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.shift == 16.0

    first = make_image(32, 32, seed=0)
    call = {"image": first, "prompt": "a bird", "width": 32, "height": 32, "num_frames": 5}
    to_one = generate(pipe, **call, last_image=make_image(32, 32, seed=1))
    to_other = generate(pipe, **call, last_image=make_image(32, 32, seed=2))

    assert to_one.shape == (5, 32, 32, 3)
    assert not np.allclose(to_one, to_other, atol=1e-3)
    # The learned position embedding spans two images' tokens, so one image alone cannot be embedded.
    with pytest.raises(RuntimeError, match="514"):
        generate(pipe, **call)


def test_wan22_a14b_switches_experts_at_the_boundary(load_tiny: Callable[[str], Any], make_image: ImageFactory) -> None:
    from diffusers import UniPCMultistepScheduler

    pipe = load_tiny("wan22_i2v_a14b")
    assert pipe.config.boundary_ratio == 0.9
    assert pipe.image_encoder is None and pipe.image_processor is None
    for expert in (pipe.transformer, pipe.transformer_2):
        assert expert.config.in_channels == 36
        assert expert.config.image_dim is None
        assert expert.config.rope_max_seq_len == 1024
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.scheduler.config.use_flow_sigmas
    assert pipe.scheduler.config.flow_shift == 5.0

    timesteps: dict[str, list[float]] = {"transformer": [], "transformer_2": []}
    for name, timestep_list in timesteps.items():
        getattr(pipe, name).register_forward_pre_hook(
            lambda module, args, kwargs, seen=timestep_list: seen.append(float(kwargs["timestep"].max())),
            with_kwargs=True,
        )
    frames = generate(
        pipe,
        image=make_image(32, 32),
        prompt="a cat",
        width=32,
        height=32,
        num_frames=9,
        guidance_scale=3.5,
        guidance_scale_2=2.0,
    )

    assert frames.shape == (9, 32, 32, 3)
    # Two steps with CFG: the high-noise expert takes t=999 (twice), the low-noise one the step below 900.
    boundary = 0.9 * pipe.scheduler.config.num_train_timesteps
    assert len(timesteps["transformer"]) == len(timesteps["transformer_2"]) == 2
    assert all(t >= boundary for t in timesteps["transformer"])
    assert all(t < boundary for t in timesteps["transformer_2"])


def test_framepack_layout(load_tiny: Callable[[str], Any]) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = load_tiny("framepack")
    transformer = pipe.transformer
    # First-block caching needs a head and a tail block.
    assert len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks) >= 2
    assert transformer.config.has_image_proj and transformer.config.has_clean_x_embedder
    assert transformer.config.image_proj_dim == pipe.image_encoder.config.hidden_size
    assert transformer.config.text_embed_dim == pipe.text_encoder.config.hidden_size
    assert transformer.config.pooled_projection_dim == pipe.text_encoder_2.config.hidden_size
    assert transformer.config.in_channels == pipe.vae.config.latent_channels
    assert (pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal) == (8, 4)
    assert pipe.text_encoder_2.config.max_position_embeddings == 77
    siglip = pipe.image_encoder.config
    assert (siglip.image_size // siglip.patch_size) ** 2 == 729
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    assert pipe.scheduler.config.shift == 7.0


@pytest.mark.parametrize(
    ("sampling_type", "num_frames", "with_last_image", "sections"),
    [
        ("inverted_anti_drifting", 33, False, 1),
        ("vanilla", 33, False, 1),
        ("vanilla", 34, False, 2),
        ("inverted_anti_drifting", 34, True, 2),
    ],
)
def test_framepack_returns_whole_sections(
    load_tiny: Callable[[str], Any],
    make_image: ImageFactory,
    sampling_type: str,
    num_frames: int,
    with_last_image: bool,
    sections: int,
) -> None:
    pipe = load_tiny("framepack")
    extra = {"last_image": make_image(32, 32, seed=1)} if with_last_image else {}

    frames = generate(
        pipe,
        image=make_image(32, 32),
        prompt="a cat",
        width=32,
        height=32,
        num_frames=num_frames,
        latent_window_size=9,
        guidance_scale=10.0,
        true_cfg_scale=1.0,
        sampling_type=sampling_type,
        **extra,
    )

    # A section is (9-1)*4+1 = 33 frames, so num_frames=34 needs two. The output is not trimmed to num_frames:
    # each section adds 9 latents = 36 frames, plus the first frame.
    assert frames.shape == (sections * 36 + 1, 32, 32, 3)


def test_framepack_vanilla_refuses_a_last_image(load_tiny: Callable[[str], Any], make_image: ImageFactory) -> None:
    pipe = load_tiny("framepack")
    with pytest.raises(ValueError, match="inverted_anti_drifting"):
        generate(
            pipe,
            image=make_image(32, 32),
            last_image=make_image(32, 32, seed=1),
            prompt="a cat",
            width=32,
            height=32,
            num_frames=33,
            sampling_type="vanilla",
        )


def test_svd_defaults_to_25_frames_with_an_8x_vae(load_tiny: Callable[[str], Any], make_image: ImageFactory) -> None:
    pipe = load_tiny("svd")
    assert pipe.vae_scale_factor == 8
    unet = pipe.unet.config
    assert unet.num_frames == 25
    assert unet.projection_class_embeddings_input_dim == 3 * unet.addition_time_embed_dim
    assert unet.cross_attention_dim == pipe.image_encoder.config.projection_dim
    # SVD resizes the image to 224x224 before CLIP, whatever the processor says.
    assert pipe.image_encoder.config.image_size == 224

    frames = generate(
        pipe,
        image=make_image(32, 32),
        width=32,
        height=32,
        fps=7,
        motion_bucket_id=127,
        noise_aug_strength=0.02,
        decode_chunk_size=8,
    )

    assert frames.shape == (25, 32, 32, 3)


def test_skyreels_df_generates_long_videos_in_overlapping_chunks(
    load_tiny: Callable[[str], Any], make_image: ImageFactory
) -> None:
    from diffusers import UniPCMultistepScheduler

    pipe = load_tiny("skyreels_v2_df")
    config = pipe.transformer.config
    assert config.rope_max_seq_len == 1024
    assert config.in_channels == 16
    assert config.num_layers >= 2
    assert config.text_dim == pipe.text_encoder.config.d_model
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.scheduler.config.use_flow_sigmas
    latent_frames: list[int] = []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: latent_frames.append(kwargs["hidden_states"].shape[2]), with_kwargs=True
    )
    call = {"image": make_image(32, 32), "prompt": "a cat", "width": 32, "height": 32, "ar_step": 0}

    one_chunk = generate(pipe, **call, num_frames=9, base_num_frames=9)
    assert one_chunk.shape == (9, 32, 32, 3)
    assert latent_frames == [3] * 4  # 2 steps, with and without the prompt

    latent_frames.clear()
    # base 17 frames = 5 latents, overlap 5 frames = 2 latents: the second chunk adds 3 latents = 12 frames.
    two_chunks = generate(pipe, **call, num_frames=29, base_num_frames=17, overlap_history=5)
    assert two_chunks.shape == (29, 32, 32, 3)
    assert latent_frames == [5] * 8

    # diffusers 0.42.1 cannot finish on a partial chunk (21 frames = 6 latents leaves 1 new latent for the
    # second chunk). If this starts passing, callers no longer need to round num_frames to whole chunks.
    with pytest.raises(IndexError):
        generate(pipe, **call, num_frames=21, base_num_frames=17, overlap_history=5)
