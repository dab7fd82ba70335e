"""The NNX VAE against diffusers' PyTorch `AutoencoderKL` (tiny, random weights)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL

from t4a_jax.models.vae import VAEConfig
from tools.convert_weights.core import ConversionError
from tools.convert_weights.vae import convert_vae, load_diffusers_vae
from torch_utils import nchw, nhwc, numpy_state_dict, randomize_

CONFIG = VAEConfig.tiny()
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, size=(2, 32, 32, 3)).astype(np.float32)


def _torch_vae(config: VAEConfig = CONFIG) -> TorchAutoencoderKL:
    levels = len(config.block_out_channels)
    vae = TorchAutoencoderKL(
        in_channels=config.in_channels, out_channels=config.out_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        sample_size=32, scaling_factor=config.scaling_factor)
    return randomize_(vae, std=0.05)


@pytest.fixture(scope="module")
def pair():
    torch_vae = _torch_vae()
    return torch_vae, convert_vae(numpy_state_dict(torch_vae), CONFIG)


def _assert_close(actual, expected, rtol=1e-4):
    """Max abs error within `rtol` of the reference's scale (outputs here are ~0.1)."""
    expected = np.asarray(expected)
    tol = max(1e-6, rtol * float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=tol)


def test_encode_matches_diffusers(pair):
    torch_vae, vae = pair
    with torch.no_grad():
        dist = torch_vae.encode(nchw(IMAGES)).latent_dist
    mean, logvar = vae.encode(IMAGES)
    assert mean.shape == logvar.shape == (2, 16, 16, 4)
    _assert_close(mean, nhwc(dist.mean))
    _assert_close(logvar, nhwc(dist.logvar))

    key = jax.random.key(1)
    eps = jax.random.normal(key, mean.shape)
    _assert_close(vae.sample_latents(IMAGES, key),
                  CONFIG.scaling_factor * (nhwc(dist.mean) + nhwc(dist.std) * np.asarray(eps)))


def test_decode_matches_diffusers(pair):
    torch_vae, vae = pair
    z = RNG.normal(size=(2, 16, 16, 4)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(torch_vae.decode(nchw(z)).sample)
    images = vae.decode(CONFIG.scaling_factor * z)
    assert images.shape == (2, 32, 32, 3)
    _assert_close(images, expected)


def test_old_attention_names_convert(pair):
    torch_vae, vae = pair
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in numpy_state_dict(torch_vae).items():
        for new, old in old_names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        state[key] = value
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in state
    old = convert_vae(state, CONFIG)
    for name in ("to_q", "to_k", "to_v"):
        np.testing.assert_array_equal(
            getattr(old.decoder.mid_block.attentions[0], name).kernel[...],
            getattr(vae.decoder.mid_block.attentions[0], name).kernel[...])
    np.testing.assert_array_equal(old.encoder.mid_block.attentions[0].to_out[0].bias[...],
                                  vae.encoder.mid_block.attentions[0].to_out[0].bias[...])


def test_conversion_refuses_a_wrong_config(pair):
    torch_vae, _ = pair
    with pytest.raises(ConversionError, match="shape mismatches"):
        convert_vae(numpy_state_dict(torch_vae), VAEConfig.tiny(block_out_channels=(32, 32)))


@pytest.mark.parametrize("safe", [True, False])
def test_diffusers_folder_round_trip(pair, tmp_path, safe):
    torch_vae, vae = pair
    torch_vae.save_pretrained(tmp_path, safe_serialization=safe)
    weights = "diffusion_pytorch_model." + ("safetensors" if safe else "bin")
    assert os.path.isfile(tmp_path / weights)
    config, state = load_diffusers_vae(tmp_path)
    assert config == CONFIG
    loaded = convert_vae(state, config)
    z = RNG.normal(size=(1, 16, 16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.decode(z), vae.decode(z))


def test_missing_files_are_named(pair, tmp_path):
    torch_vae, _ = pair
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_diffusers_vae(tmp_path)
    (tmp_path / "vae").mkdir()
    torch_vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(FileNotFoundError, match="pass .*vae"):
        load_diffusers_vae(tmp_path)
    os.remove(tmp_path / "vae" / "diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError,
                       match=r"diffusion_pytorch_model\.safetensors.*\.bin"):
        load_diffusers_vae(tmp_path / "vae")


def test_config_refuses_unsupported_blocks(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"_class_name": "AutoencoderKL", "act_fn": "gelu"}))
    with pytest.raises(ValueError, match="config.json.*act_fn"):
        load_diffusers_vae(tmp_path)
