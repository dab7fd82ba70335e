"""The NNX U-Net against diffusers' PyTorch `UNet2DConditionModel` and `UNetMotionModel`
(tiny, random weights), feature capture, conversion errors, configs, jit + grad."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from flax import nnx

from t4a_jax.config_files import get_config
from t4a_jax.models import abstract_model, load, save
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import CROSS_DOWN, CROSS_UP, UNetConfig
from tools.convert_weights.core import ConversionError
from tools.convert_weights.unet import (convert_unet, convert_unet_into, load_diffusers_unet,
                                        unet_config_from_diffusers)
from torch_utils import (TORCH_ADAPTER, TORCH_UNET, nchw, nhwc, numpy_state_dict,
                         randomize_)

REPO = pathlib.Path(__file__).resolve().parents[1]


RNG = np.random.default_rng(0)
FRAMES = 4
SAMPLE = RNG.normal(size=(2, FRAMES, 8, 8, 4)).astype(np.float32)     # [B*V, F, H, W, C]
TIMESTEPS = np.array([3, 700])
CONTEXT = RNG.normal(size=(2, 7, 32)).astype(np.float32)              # [B*V, L, D]
CAPTURED = ("down_blocks.0.attentions.0", "mid_block.motion_modules.0",
            "up_blocks.1.attentions.0", "up_blocks.1.motion_modules.0")


def unet_config(variant: str | None = None):
    return get_config("unet", variant)


@pytest.fixture(scope="module")
def torch_unet() -> UNet2DConditionModel:
    return randomize_(UNet2DConditionModel(**TORCH_UNET))


@pytest.fixture(scope="module")
def torch_motion(torch_unet) -> tuple[UNetMotionModel, MotionAdapter]:
    adapter = randomize_(MotionAdapter(**TORCH_ADAPTER), seed=1)
    return UNetMotionModel.from_unet2d(torch_unet, adapter).eval(), adapter


@pytest.fixture(scope="module")
def motion_unet(torch_motion) -> UNet:
    motion, _ = torch_motion
    return convert_unet(numpy_state_dict(motion),
                        unet_config_from_diffusers(dict(motion.config)))


def _jit(model: UNet, **kwargs):
    """model(*args, **kwargs) as one jitted function of (state, *args)."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, *args: nnx.merge(graphdef, state)(*args, **kwargs))
    return lambda *args: fn(state, *args)


def _torch_motion_run(motion: UNetMotionModel, sample: np.ndarray) -> np.ndarray:
    """diffusers' call: sample [b, c, f, h, w], text tokens repeated to b*f."""
    with torch.no_grad():
        out = motion(torch.from_numpy(sample).permute(0, 4, 1, 2, 3),
                     torch.from_numpy(TIMESTEPS),
                     torch.from_numpy(CONTEXT).repeat_interleave(sample.shape[1], dim=0))
    return out.sample.permute(0, 2, 3, 4, 1).numpy()


def _assert_close(actual, expected, rtol=1e-4):
    """Max abs error within `rtol` of the reference's scale (outputs here are ~1)."""
    expected = np.asarray(expected)
    tol = max(1e-6, rtol * float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=0, atol=tol)


def test_image_unet_matches_diffusers(torch_unet):
    config = unet_config_from_diffusers(dict(torch_unet.config))
    assert not config.motion_modules
    unet = convert_unet(numpy_state_dict(torch_unet), config)
    sample = SAMPLE[:, :1]                                   # F = 1: a plain image U-Net
    with torch.no_grad():
        ref = torch_unet(nchw(sample[:, 0]), torch.from_numpy(TIMESTEPS),
                         torch.from_numpy(CONTEXT)).sample
    out = _jit(unet)(sample, TIMESTEPS, CONTEXT)
    assert out.shape == (2, 1, 8, 8, 4)
    _assert_close(out[:, 0], nhwc(ref))

    # bf16 compute: features in bf16, the output back in the sample's dtype.
    bf16 = convert_unet(numpy_state_dict(torch_unet),
                        dataclasses.replace(config, dtype=jnp.bfloat16))
    out, feats = _jit(bf16, capture=("mid_block.attentions.0",))(sample, TIMESTEPS, CONTEXT)
    assert out.dtype == jnp.float32 and feats["mid_block.attentions.0"].dtype == jnp.bfloat16
    _assert_close(out[:, 0], nhwc(ref), rtol=5e-2)


def test_motion_unet_from_diffusers_folders_matches(torch_unet, torch_motion, tmp_path):
    motion, adapter = torch_motion
    torch_unet.save_pretrained(tmp_path / "unet")
    adapter.save_pretrained(tmp_path / "adapter")
    config, state = load_diffusers_unet(tmp_path / "unet", motion_adapter=tmp_path / "adapter")
    assert config == unet_config_from_diffusers(dict(motion.config))
    assert config == UNetConfig.from_config_dict(unet_config("tiny"))
    out = _jit(convert_unet(state, config))(SAMPLE, TIMESTEPS, CONTEXT)
    assert out.shape == SAMPLE.shape
    _assert_close(out, _torch_motion_run(motion, SAMPLE))


def test_capture_matches_forward_hooks_and_a_run_that_stops_there(torch_motion, motion_unet):
    motion, _ = torch_motion
    hooked = {}
    handles = [motion.get_submodule(name).register_forward_hook(
        lambda module, args, out, name=name: hooked.__setitem__(
            name, (out[0] if isinstance(out, tuple) else out).detach()))
        for name in CAPTURED]
    try:
        _torch_motion_run(motion, SAMPLE)
    finally:
        for handle in handles:
            handle.remove()

    graphdef, state = nnx.split(motion_unet)
    run = lambda capture: lambda state: nnx.merge(graphdef, state)(
        SAMPLE, TIMESTEPS, CONTEXT, capture=capture)
    full = jax.jit(run(CAPTURED)).lower(state).compile()
    out, feats = full(state)
    assert set(feats) == set(CAPTURED)
    for name in CAPTURED:
        ref = hooked[name]                                   # [(b f), c, h, w]
        ref = ref.reshape(2, FRAMES, *ref.shape[1:]).permute(0, 1, 3, 4, 2).numpy()
        assert feats[name].shape == ref.shape
        _assert_close(feats[name], ref)

    # Asking only for the feature: XLA drops every layer after it, same values.
    name = "up_blocks.1.motion_modules.0"
    stop = jax.jit(lambda state: run((name,))(state)[1][name]).lower(state).compile()
    _assert_close(stop(state), feats[name], rtol=1e-6)
    assert stop.cost_analysis()["flops"] < 0.9 * full.cost_analysis()["flops"]

    with pytest.raises(ValueError, match=r"up_blocks\.7\.resnets\.0.*up_blocks\.1\.motion_"):
        motion_unet(SAMPLE, TIMESTEPS, CONTEXT, capture=("up_blocks.7.resnets.0",))


def test_conversion_errors_name_the_keys(torch_motion, motion_unet):
    good = numpy_state_dict(torch_motion[0])
    bad = dict(good)
    del bad["up_blocks.1.motion_modules.0.proj_out.bias"]
    bad["down_blocks.0.motion_modules.0.bogus.weight"] = np.zeros(3, np.float32)
    bad["down_blocks.0.resnets.0.conv1.bias"] = np.zeros(5, np.float32)
    with pytest.raises(ConversionError) as info:
        convert_unet_into(bad, motion_unet, source="bad.safetensors")
    for fragment in ("bad.safetensors", "up_blocks.1.motion_modules.0.proj_out.bias",
                     "unused keys: down_blocks.0.motion_modules.0.bogus.weight",
                     "down_blocks.0.resnets.0.conv1.bias (5,)"):
        assert fragment in str(info.value)

    table = "mid_block.motion_modules.0.transformer_blocks.0.pos_embed.pe"
    with pytest.raises(ConversionError, match=f"{table} is not the sinusoidal table"):
        convert_unet_into({**good, table: good[table] + 0.01}, motion_unet)
    with pytest.raises(ConversionError, match=f"{table} \\(1, 16, 64\\)"):
        convert_unet_into({**good, table: good[table][:, :16]}, motion_unet)
    # A table of a motion block the model does not have is an unused key.
    extra = "down_blocks.0.motion_modules.5.transformer_blocks.0.pos_embed.pe"
    with pytest.raises(ConversionError, match=f"unused keys: {extra}"):
        convert_unet_into({**good, extra: good[table]}, motion_unet)
    report = convert_unet_into(good, motion_unet)
    assert table in report.consumed


def test_configs():
    sd15 = UNetConfig.from_config_dict(unet_config("sd15"))
    assert sd15 == UNetConfig.from_config_dict(unet_config())
    assert sd15 == dataclasses.replace(UNetConfig(), motion_modules=True)
    # The config.json of runwayml/stable-diffusion-v1-5/unet (SD1.5's "attention_head_dim"
    # is the number of heads).
    sd15_json = {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
        "cross_attention_dim": 768, "down_block_types": [
            "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
            "DownBlock2D"], "downsample_padding": 1, "flip_sin_to_cos": True,
        "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1,
        "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"]}
    assert unet_config_from_diffusers(sd15_json) == UNetConfig()
    with pytest.raises(ValueError, match="unet.json: unsupported class_embed_type='timestep'"):
        unet_config_from_diffusers({**sd15_json, "class_embed_type": "timestep"},
                                   source="unet.json")
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        unet_config("huge")
    with pytest.raises(ValueError, match="unknown fields \\['bogus'\\]"):
        UNetConfig.from_config_dict({"bogus": 1})
    with pytest.raises(ValueError, match="motion_num_attention_heads=3"):
        UNetConfig(motion_modules=True, motion_num_attention_heads=3)


def test_jit_grad_with_remat_and_save_load(tmp_path):
    # One level (down, mid, up stage) keeps the compile short.
    config = dataclasses.replace(UNetConfig.from_config_dict(unet_config("tiny")), remat=True,
                                 block_out_channels=(32,), down_block_types=(CROSS_DOWN,),
                                 up_block_types=(CROSS_UP,))
    graphdef, state = nnx.split(abstract_model(lambda rngs: UNet(config, rngs=rngs)))
    rng = np.random.default_rng(2)
    state = jax.tree.map(lambda s: rng.normal(0, 0.2, s.shape).astype(s.dtype), state)
    name = "up_blocks.0.motion_modules.1"

    def loss(state):
        out, feats = nnx.merge(graphdef, state)(SAMPLE[:, :2], TIMESTEPS, CONTEXT,
                                                num_views=2, capture=(name,))
        return jnp.mean(out ** 2) + jnp.mean(feats[name] ** 2)

    traced = jax.jit(jax.value_and_grad(loss)).trace(state)
    # Each of the 3 stages is rematerialised in the backward pass.
    assert str(traced.jaxpr).count("differentiated=True") == 3
    value, grads = traced.lower().compile()(state)
    assert np.isfinite(value)
    for path, grad in nnx.to_flat_state(grads):
        assert np.isfinite(grad[...]).all(), path
    motion_grad = grads["up_blocks"][0]["motion_modules"][0]["proj_in"]["kernel"][...]
    assert np.abs(motion_grad).max() > 0

    # The U-Net is a `t4a_jax.models` checkpoint: config and every parameter round-trip.
    unet = nnx.merge(graphdef, state)
    save(unet, tmp_path / "unet")
    restored = load(tmp_path / "unet")
    assert isinstance(restored, UNet) and restored.config == config
    for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(restored)),
                                 nnx.to_flat_state(nnx.state(unet))):
        np.testing.assert_array_equal(a[...], b[...], err_msg=str(path))
