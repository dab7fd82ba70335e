"""The MV-VDM U-Net: conversion of a synthetic Animate3D checkpoint holding exactly the
reference key names into configs/unet.py:tiny_mvvdm (the real topology at small
channels), the IP-Adapter order against diffusers' own loader, the camera embedding, the
trainable filter, conversion errors; and, on a two-level version (SMALL, quicker to
build and compile), parity with diffusers' AnimateDiff U-Net + IP-Adapter where the
MV-VDM parts are neutral, and jit + grad + capture of the full MV-VDM."""

from __future__ import annotations

import copy
import dataclasses
import json
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
from t4a_jax.models.transformer import sinusoidal_table
from t4a_jax.models.unet import UNet, is_trainable, trainable_filter
from t4a_jax.models.unet_config import UNetConfig
from tools.convert_weights.animate3d import animate3d_state_dict, convert_animate3d
from tools.convert_weights.core import ConversionError, to_nnx_layout, torch_key_to_path
from tools.convert_weights.ip_adapter import cross_attention_names, ip_adapter_state_dict
from tools.convert_weights.unet import UNET_RENAMES, convert_unet_into
from torch_utils import numpy_state_dict, randomize_

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
MOTION_KEYS = json.loads((REFERENCE / "animate3d_motion_modules_keys.json").read_text())
FULL_KEYS = json.loads((REFERENCE / "animate3d_full_unet_keys.json").read_text())

# Reference size -> tiny_mvvdm size: channels 320/640/1280 -> 16/32/64 (1280 is also the
# time embedding, 4 * 320), GEGLU 2560/5120/10240 -> 8x, up-block skip concatenations
# 960/1920 (2560 = 1280 + 1280 as GEGLU), text tokens 768 -> 32, CLIP image embedding
# 1024 -> 24, IP-Adapter projection 3072 = 4 * 768 -> 128.
TINY = {320: 16, 640: 32, 1280: 64, 2560: 128, 5120: 256, 10240: 512, 960: 48, 1920: 96,
        768: 32, 1024: 24, 3072: 128}
TORCH_BASE = dict(sample_size=8, block_out_channels=(16, 32, 64, 64), layers_per_block=2,
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8)
# Two levels, 2 layers per block (up_blocks.1 still has motion_modules.2).
SMALL = dict(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TORCH_SMALL = {**TORCH_BASE, **SMALL}
TORCH_ADAPTER = dict(block_out_channels=(16, 32), motion_layers_per_block=2,
                     motion_num_attention_heads=2, motion_norm_num_groups=8)

B, V, F = 1, 2, 3                                      # objects, views, frames
RNG = np.random.default_rng(0)
SAMPLE = RNG.normal(size=(B * V, F, 8, 8, 4)).astype(np.float32)
TIMESTEPS = np.array([500, 500])
CONTEXT = RNG.normal(size=(B * V, 5, 32)).astype(np.float32)
CAMERAS = RNG.normal(size=(B * V, 16)).astype(np.float32)
IMAGE_EMBEDS = RNG.normal(size=(B * V, 24)).astype(np.float32)
TAP = "up_blocks.1.motion_modules.2"


def mvvdm_config(variant: str = "tiny_mvvdm", **overrides) -> UNetConfig:
    return dataclasses.replace(UNetConfig.from_config_dict(get_config("unet", variant)),
                               **overrides)


def tiny_shape(shape) -> tuple[int, ...]:
    return tuple(TINY.get(d, d) for d in shape)


def _random(shape, rng: np.random.Generator, std: float = 0.2) -> np.ndarray:
    return (rng.normal(size=shape) * std).astype(np.float32)


def synthetic_motion_checkpoint(seed: int = 1) -> dict[str, np.ndarray]:
    """Exactly the 888 names of the released `animate3d_motion_modules.ckpt`, shapes scaled
    to tiny_mvvdm, a different random tensor under every name (the position tables hold
    the sinusoid, as in the real checkpoint)."""
    rng = np.random.default_rng(seed)
    return {key: (sinusoidal_table(shape[1], TINY[shape[2]])[None].astype(np.float32)
                  if key.endswith(".pe") else _random(tiny_shape(shape), rng))
            for key, shape in MOTION_KEYS.items()}


def synthetic_ip_adapter(config: UNetConfig, base: dict[str, np.ndarray], seed: int = 2):
    """`ip-adapter_sd15.bin` at tiny size: {"image_proj": ..., "ip_adapter": ...}."""
    rng = np.random.default_rng(seed)
    d, e = config.cross_attention_dim, config.image_embed_dim
    attention = {}
    for m, name in enumerate(cross_attention_names(config)):
        shape = base[f"{name}.to_k.weight"].shape                    # [C, cross_dim]
        attention[f"{2 * m + 1}.to_k_ip.weight"] = _random(shape, rng)
        attention[f"{2 * m + 1}.to_v_ip.weight"] = _random(shape, rng)
    return {"image_proj": {"proj.weight": _random((4 * d, e), rng),
                           "proj.bias": _random((4 * d,), rng),
                           "norm.weight": 1 + _random((d,), rng),
                           "norm.bias": _random((d,), rng)},
            "ip_adapter": attention}


def camera_weights(rng: np.random.Generator, zero_output: bool = False):
    """MVDream's `camera_embedding.linear_{1,2}` at tiny size (time embedding 64)."""
    shapes = {"linear_1.weight": (64, 16), "linear_1.bias": (64,),
              "linear_2.weight": (64, 64), "linear_2.bias": (64,)}
    return {f"camera_embedding.{k}": (np.zeros(shape, np.float32)
                                      if zero_output and k.startswith("linear_2")
                                      else _random(shape, rng)) for k, shape in shapes.items()}


def _to_torch(tree):
    return {k: _to_torch(v) if isinstance(v, dict) else torch.from_numpy(v)
            for k, v in tree.items()}


def _params(model: nnx.Module) -> dict[str, np.ndarray]:
    return {".".join(map(str, path)): np.asarray(v[...])
            for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _assert_close(actual, expected, rtol=1e-4):
    """Max abs error within `rtol` of the reference's scale."""
    expected = np.asarray(expected)
    tol = max(1e-6, rtol * float(np.abs(expected).max()))
    np.testing.assert_allclose(np.asarray(actual, np.float32), expected, rtol=0, atol=tol)


@pytest.fixture(scope="module")
def torch_base() -> UNet2DConditionModel:
    return randomize_(UNet2DConditionModel(**TORCH_BASE))


@pytest.fixture(scope="module")
def base_state(torch_base) -> dict[str, np.ndarray]:
    """The MVDream U-Net in diffusers layout: SD1.5 keys + the camera MLP."""
    return {**numpy_state_dict(torch_base), **camera_weights(np.random.default_rng(3))}


@pytest.fixture(scope="module")
def sources(base_state):
    config = mvvdm_config()
    return base_state, synthetic_motion_checkpoint(), synthetic_ip_adapter(config, base_state)


@pytest.fixture(scope="module")
def converted(sources):
    base, motion, ip = sources
    # The released motion checkpoint may wrap its tensors in "state_dict".
    return convert_animate3d(base, {"state_dict": motion}, ip, mvvdm_config())


def test_synthetic_checkpoints_have_the_reference_names_and_scaled_shapes(sources):
    """tiny_mvvdm keeps the real topology: base + motion + IP-Adapter (renamed as diffusers
    names it) are exactly the 1614 keys of the full Animate3D U-Net, at scaled shapes."""
    base, motion, ip = sources
    assert len(motion) == 888 and set(motion) == set(MOTION_KEYS)
    merged = animate3d_state_dict(base, motion, ip, mvvdm_config())
    assert {k: tuple(v.shape) for k, v in merged.items()} == \
        {k: tiny_shape(shape) for k, shape in FULL_KEYS.items()}


def test_every_key_lands_on_its_parameter(sources, converted):
    base, motion, ip = sources
    unet, report = converted
    merged = animate3d_state_dict(base, motion, ip, mvvdm_config())
    assert set(report.consumed) == set(merged) and not report.allowed_missing
    params = _params(unet)
    tables = [k for k in merged if k.endswith("time_pos_embed.pe")]
    assert len(tables) == 42 and len(params) == len(merged) - len(tables)
    for key, value in merged.items():
        if key in tables:
            continue
        name = report.consumed[key]
        np.testing.assert_array_equal(params[name], to_nnx_layout(value, name.rsplit(".", 1)[-1]),
                                      err_msg=key)
    # The IP-Adapter index counts attn1/attn2 pairs: down blocks (6), up blocks (9), mid.
    attn2 = "transformer_blocks.0.attn2.to_k_ip.0.kernel"
    for index, module in ((1, "down_blocks.0.attentions.0"), (11, "down_blocks.2.attentions.1"),
                          (13, "up_blocks.1.attentions.0"), (29, "up_blocks.3.attentions.2"),
                          (31, "mid_block.attentions.0")):
        np.testing.assert_array_equal(params[f"{module}.{attn2}"],
                                      ip["ip_adapter"][f"{index}.to_k_ip.weight"].T)
    np.testing.assert_array_equal(params["image_proj.proj.kernel"],
                                  ip["image_proj"]["proj.weight"].T)


def test_ip_adapter_order_matches_diffusers_loader(torch_base, sources):
    """diffusers' own `_load_ip_adapter_weights` puts every IP-Adapter tensor where
    `ip_adapter_state_dict` does (names and values)."""
    _, _, ip = sources
    loaded = copy.deepcopy(torch_base)
    loaded._load_ip_adapter_weights([_to_torch(ip)])
    state = numpy_state_dict(loaded)
    theirs = {k: v for k, v in state.items() if "_ip." in k or k.startswith("encoder_hid_proj")}
    ours = ip_adapter_state_dict(ip, mvvdm_config())
    assert sorted(theirs) == sorted(ours) and len(ours) == 36
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_trainable_filter_selects_i2v_and_motion_modules(sources, converted):
    unet, report = converted
    _, motion, _ = sources
    trainable = {".".join(map(str, p)) for p, _ in
                 nnx.to_flat_state(nnx.state(unet, trainable_filter))}
    everything = set(_params(unet))
    expected = {name for name in everything
                if "motion_modules" in name or ".to_q_i2v." in name or ".to_out_i2v." in name}
    assert trainable == expected
    # Exactly the parameters of the Animate3D checkpoint (its 42 position tables aside).
    assert trainable == {report.consumed[k] for k in motion if not k.endswith(".pe")}
    assert is_trainable("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_i2v.kernel")
    assert not is_trainable(("down_blocks", 0, "attentions", 0, "transformer_blocks", 0,
                             "attn1", "to_q", "kernel"))
    assert not is_trainable("camera_embedding.linear_1.kernel")


def test_camera_embedding_added_once_per_view_repeated_over_frames(converted):
    unet, _ = converted
    cameras = CAMERAS.copy()
    cond = unet.conditioning(TIMESTEPS, CONTEXT, F, cameras=cameras,
                             image_embeds=IMAGE_EMBEDS, num_views=V)
    p = _params(unet)
    lin = lambda x, name: x @ p[f"{name}.kernel"] + p[f"{name}.bias"]
    silu = lambda x: x / (1 + np.exp(-x))
    t = np.asarray(unet.time_proj(jnp.asarray(TIMESTEPS)))
    temb = lin(silu(lin(t, "time_embedding.linear_1")), "time_embedding.linear_2")
    camera = lin(silu(lin(cameras, "camera_embedding.linear_1")), "camera_embedding.linear_2")
    np.testing.assert_allclose(cond.temb, np.repeat(temb + camera, F, axis=0), atol=1e-5)
    temb = np.asarray(cond.temb).reshape(B * V, F, -1)
    np.testing.assert_array_equal(temb, np.broadcast_to(temb[:, :1], temb.shape))
    assert np.abs(temb[0, 0] - temb[1, 0]).max() > 1e-3      # same t, different cameras
    tokens = np.asarray(cond.ip_tokens).reshape(B * V, F, 4, 32)
    np.testing.assert_array_equal(tokens, np.broadcast_to(tokens[:, :1], tokens.shape))


def test_neutral_mvvdm_matches_diffusers_animatediff_with_ip_adapter():
    """With one view, the I2V branch at its zero init, a zero camera MLP output and no
    spatio-temporal attention, the MV-VDM is diffusers' AnimateDiff `UNetMotionModel`
    with the IP-Adapter loaded (scale 1, real image embeddings)."""
    config = mvvdm_config(spatio_temporal=False, **SMALL)
    torch_base = randomize_(UNet2DConditionModel(**TORCH_SMALL), seed=5)
    adapter = randomize_(MotionAdapter(**TORCH_ADAPTER), seed=6)
    rng = np.random.default_rng(7)
    base = {**numpy_state_dict(torch_base), **camera_weights(rng, zero_output=True)}
    ip = synthetic_ip_adapter(config, base)
    reference = UNetMotionModel.from_unet2d(torch_base, adapter)
    reference._load_ip_adapter_weights([_to_torch(ip)])
    reference.eval()
    # The MV2V adapter of every attn1 at its initialisation: to_out_i2v = 0.
    i2v = {}
    for key, value in base.items():
        if key.endswith(".attn1.to_q.weight"):
            prefix = key[:-len("to_q.weight")] + "processor."
            i2v[prefix + "to_q_i2v.weight"] = value
            i2v[prefix + "to_out_i2v.weight"] = np.zeros_like(value)
            i2v[prefix + "to_out_i2v.bias"] = np.zeros(value.shape[0], np.float32)
    unet, _ = convert_animate3d(base, {**numpy_state_dict(adapter), **i2v}, ip, config)

    sample = SAMPLE[:1]
    graphdef, state = nnx.split(unet)
    out = jax.jit(lambda state: nnx.merge(graphdef, state)(
        sample, TIMESTEPS[:1], CONTEXT[:1], cameras=CAMERAS[:1], image_embeds=IMAGE_EMBEDS[:1],
        num_views=1))(state)
    with torch.no_grad():
        expected = reference(torch.from_numpy(sample).permute(0, 4, 1, 2, 3),
                             torch.from_numpy(TIMESTEPS[:1]),
                             torch.from_numpy(CONTEXT[:1]).repeat_interleave(F, dim=0),
                             added_cond_kwargs={"image_embeds": [
                                 torch.from_numpy(IMAGE_EMBEDS[:1, None])]}).sample
    _assert_close(out, expected.permute(0, 2, 3, 4, 1).numpy())


def test_full_mvvdm_jit_grad_capture_and_save_load(tmp_path):
    """Every MV-VDM part on (SMALL, random weights, 2 views, 3 frames): finite gradients
    that reach the trainable parameters only, the captured up_blocks.1 motion feature
    equals a run that stops there, views mix (perturbing view 1 changes view 0), and
    `t4a_jax.models.load` rebuilds the model from its config."""
    config = mvvdm_config(**SMALL)
    graphdef, state = nnx.split(abstract_model(lambda rngs: UNet(config, rngs=rngs)))
    rng = np.random.default_rng(8)
    state = jax.tree.map(lambda s: _random(s.shape, rng), state)
    graphdef, trainable, frozen = nnx.split(nnx.merge(graphdef, state), trainable_filter, ...)

    def run(trainable, sample, capture):
        return nnx.merge(graphdef, trainable, frozen)(
            sample, TIMESTEPS, CONTEXT, cameras=CAMERAS, image_embeds=IMAGE_EMBEDS,
            num_views=V, capture=capture)

    def loss(trainable):
        out, feats = run(trainable, SAMPLE, (TAP,))
        return jnp.mean(out ** 2) + jnp.mean(feats[TAP] ** 2), (out, feats[TAP])

    (value, (out, feature)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        trainable)
    assert np.isfinite(value) and out.shape == SAMPLE.shape
    assert feature.shape == (B * V, F, 8, 8, 16)
    flat = {".".join(map(str, p)): np.asarray(g[...]) for p, g in nnx.to_flat_state(grads)}
    assert flat and all(is_trainable(name) for name in flat)
    assert all(np.isfinite(g).all() for g in flat.values())
    for name in ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q_i2v.kernel",
                 "mid_block.motion_modules.0.transformer_blocks.0.attn1.to_q_sp.kernel",
                 "up_blocks.1.motion_modules.2.transformer_blocks.0.attn2."
                 "alpha_blender.mix_factor"):
        assert np.abs(flat[name]).max() > 0, name

    stop = jax.jit(lambda trainable, sample: run(trainable, sample, (TAP,))[1][TAP])
    _assert_close(stop(trainable, SAMPLE), feature, rtol=1e-5)
    perturbed = SAMPLE.copy()
    perturbed[1] += 1.0                                           # view 1 only
    changed = np.abs(np.asarray(stop(trainable, perturbed)) - np.asarray(feature))
    assert changed[0].max() > 1e-3

    unet = nnx.merge(graphdef, trainable, frozen)
    save(unet, tmp_path / "mvvdm")
    restored = load(tmp_path / "mvvdm")
    assert isinstance(restored, UNet) and restored.config == config
    ours, theirs = _params(unet), _params(restored)
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_inputs_are_checked(converted):
    mvvdm, _ = converted
    with pytest.raises(ValueError, match=r"use_camera_embedding=True, so cameras \[2, 16\]"):
        mvvdm(SAMPLE, TIMESTEPS, CONTEXT, image_embeds=IMAGE_EMBEDS, num_views=V)
    with pytest.raises(ValueError, match=r"use_ip_adapter=True, so image_embeds \[2, 24\]"):
        mvvdm(SAMPLE, TIMESTEPS, CONTEXT, cameras=CAMERAS, num_views=V)
    with pytest.raises(ValueError, match=r"cameras must be \[2, 16\], got \(2, 12\)"):
        mvvdm(SAMPLE, TIMESTEPS, CONTEXT, cameras=CAMERAS[:, :12], image_embeds=IMAGE_EMBEDS)
    plain = abstract_model(lambda rngs: UNet(mvvdm_config("tiny"), rngs=rngs))
    for name, value in (("cameras", CAMERAS), ("image_embeds", IMAGE_EMBEDS)):
        with pytest.raises(ValueError, match=f"{name} given, but the config has"):
            plain(SAMPLE, TIMESTEPS, CONTEXT, num_views=V, **{name: value})


def test_configs():
    mvvdm = mvvdm_config("mvvdm")
    parts = dict(use_camera_embedding=True, multiview_attention=True, use_i2v=True,
                 use_ip_adapter=True, spatio_temporal=True)
    assert mvvdm == dataclasses.replace(mvvdm_config("sd15"), **parts)
    assert (mvvdm.block_out_channels, mvvdm.cross_attention_dim, mvvdm.image_embed_dim,
            mvvdm.ip_num_tokens, mvvdm.ip_scale) == ((320, 640, 1280, 1280), 768, 1024, 4, 1.0)
    tiny = mvvdm_config()
    assert (tiny.down_block_types, tiny.up_block_types, tiny.layers_per_block) == \
        (mvvdm.down_block_types, mvvdm.up_block_types, mvvdm.layers_per_block)
    with pytest.raises(ValueError, match="spatio_temporal needs motion_modules=True"):
        dataclasses.replace(tiny, motion_modules=False)
    with pytest.raises(ValueError, match="block 0 has 18 channels; spatio_temporal"):
        dataclasses.replace(tiny, block_out_channels=(18, 32, 64, 64), norm_num_groups=2,
                            motion_norm_num_groups=2)


def test_conversion_errors_name_the_keys(sources, converted):
    base, motion, ip = sources
    unet, _ = converted
    config = mvvdm_config()
    merged = animate3d_state_dict(base, motion, ip, config)
    dropped = "up_blocks.2.motion_modules.1.transformer_blocks.0.attn2.processor.to_k_sp.weight"
    with pytest.raises(ConversionError, match="missing parameters: up_blocks.2.motion_modules"
                                              r"\.1\.transformer_blocks\.0\.attn2\.to_k_sp"):
        convert_unet_into({k: v for k, v in merged.items() if k != dropped}, unet)
    table = "mid_block.motion_modules.0.transformer_blocks.0.attn1.processor.time_pos_embed.pe"
    with pytest.raises(ConversionError, match=f"{table} is not the sinusoidal table"):
        convert_unet_into({**merged, table: merged[table] * 1.01}, unet)
    with pytest.raises(ConversionError, match=f"{table} \\(1, 16, 64\\)"):
        convert_unet_into({**merged, table: merged[table][:, :16]}, unet)
    with pytest.raises(ConversionError, match=r"unused: \['33\.to_k_ip\.weight'\]"):
        ip_adapter_state_dict({**ip, "ip_adapter": {**ip["ip_adapter"],
                                                    "33.to_k_ip.weight": np.zeros(1)}}, config)
    with pytest.raises(ConversionError, match=r"image_proj must hold exactly.*'latents'"):
        ip_adapter_state_dict({**ip, "image_proj": {**ip["image_proj"], "latents": 0}}, config)
    with pytest.raises(ConversionError, match="keys also in an earlier checkpoint"):
        animate3d_state_dict({**base, dropped: motion[dropped]}, motion, ip, config)
    # The flat (safetensors) IP-Adapter layout gives the same keys.
    flat = {f"{part}.{k}": v for part, d in ip.items() for k, v in d.items()}
    assert ip_adapter_state_dict(flat, config).keys() == ip_adapter_state_dict(ip, config).keys()

    # allow_missing: no IP-Adapter and no to_q_i2v; to_q_i2v then copies to_q.
    no_q = {k: v for k, v in motion.items() if "to_q_i2v" not in k}
    model, report = convert_animate3d(base, no_q, None, config,
                                      allow_missing=(r"_ip\.", r"^image_proj\.", "to_q_i2v"))
    assert len(report.allowed_missing) == 32 + 4 + 16
    params = _params(model)
    attn1 = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"
    np.testing.assert_array_equal(params[f"{attn1}.to_q_i2v.kernel"],
                                  params[f"{attn1}.to_q.kernel"])
    assert not params["image_proj.proj.kernel"].any()
    with pytest.raises(ConversionError, match="52 missing parameters"):
        convert_unet_into(animate3d_state_dict(base, no_q, None, config), model)


@pytest.mark.slow
def test_reference_keys_map_onto_the_full_size_parameters():
    """Every tensor name of the released Animate3D U-Net (1614, 42 of them position
    tables) maps through the converter's renames onto one parameter of the full mvvdm
    config, shapes included, and every parameter has its tensor (no arrays built)."""
    abstract = abstract_model(lambda rngs: UNet(mvvdm_config("mvvdm"), rngs=rngs))
    ours = {".".join(map(str, p)): tuple(v.shape)
            for p, v in nnx.to_flat_state(nnx.state(abstract, nnx.Param))}
    expected = {}
    for key, shape in FULL_KEYS.items():
        if key.endswith(".pe"):
            continue
        path = torch_key_to_path(key, UNET_RENAMES)
        leaf = path[-1]
        if leaf == "weight":
            leaf = "kernel" if len(shape) > 1 else "scale"
        name = ".".join(map(str, path[:-1] + (leaf,)))
        expected[name] = tuple(to_nnx_layout(np.empty(shape, np.int8), leaf).shape)
    assert expected == ours and len(ours) == 1614 - 42
    trainable = [name for name in ours if is_trainable(name)]
    assert len(trainable) == 888 - 42


def test_cli_combines_mvdream_animate3d_and_ip_adapter(tmp_path, capsys, sources, converted):
    """`python -m tools.convert_weights MVDREAM OUT --kind mvvdm --motion-modules CKPT
    --ip-adapter BIN` writes the same model as `convert_animate3d`, loadable by `load`."""
    from safetensors.numpy import save_file

    from tools.convert_weights import cli

    base, motion, ip = sources
    (tmp_path / "mvdream" / "unet").mkdir(parents=True)
    (tmp_path / "mvdream" / "model_index.json").write_text("{}")
    save_file(base, str(tmp_path / "mvdream" / "unet" / "diffusion_pytorch_model.safetensors"))
    torch.save({"state_dict": _to_torch(motion)}, tmp_path / "animate3d.ckpt")
    torch.save(_to_torch(ip), tmp_path / "ip-adapter_sd15.bin")
    args = [str(tmp_path / "mvdream"), str(tmp_path / "out"), "--kind", "mvvdm",
            "--motion-modules", str(tmp_path / "animate3d.ckpt"),
            "--ip-adapter", str(tmp_path / "ip-adapter_sd15.bin"),
            "--mvvdm-variant", "tiny_mvvdm"]
    assert cli.main(args) == 0
    expected = _params(converted[0])
    actual = _params(load(tmp_path / "out"))
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(actual[name], value, err_msg=name)
    # Without the motion modules the command refuses, naming the flag.
    assert cli.main(args[:4] + ["--ip-adapter", args[7], "--overwrite"]) == 1
    assert "--motion-modules" in capsys.readouterr().err
