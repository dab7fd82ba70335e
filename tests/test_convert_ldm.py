"""`python -m tools.convert_weights FILE OUT --kind ldm-ckpt --config PIPELINE` on an
original (CompVis LDM layout) single-file Stable Diffusion checkpoint.

The checkpoint is made here from the tiny random pipeline of `test_convert_cli` by mapping
every diffusers key back to its original name (the reverse of diffusers'
`single_file_utils` converters, written from the SD layout below), checked first against
diffusers' own converters, then converted by the CLI and compared with the folder
conversion and with the PyTorch models.

Original SD layout (`ldm/modules/diffusionmodules/openaimodel.py`, `.../model.py`):

  model.diffusion_model.   time_embed.{0,2}; input_blocks.0.0 = conv_in; for level b and
      layer l < layers_per_block: input_blocks.{1 + b*(L+1) + l}.{0: resnet, 1: attention},
      input_blocks.{1 + b*(L+1) + L}.0.op = downsampler (L = layers_per_block);
      middle_block.{0: resnet, 1: attention, 2: resnet}; for up level b and l <= L:
      output_blocks.{b*(L+1) + l}.{0: resnet, 1: attention}, the upsampler after the last
      layer at output_blocks.{b*(L+1) + L}.{1, or 2 after an attention}.conv;
      out.0 = conv_norm_out, out.2 = conv_out. Resnets: in_layers.{0,2} (norm1, conv1),
      emb_layers.1 (time_emb_proj), out_layers.{0,3} (norm2, conv2), skip_connection
      (conv_shortcut); attentions keep diffusers' names.
  first_stage_model.   {encoder,decoder}.{conv_in,conv_out,norm_out}; encoder.down.{i}.block.
      {j} / .downsample.conv; decoder.up.{n-1-i}.block.{j} / .upsample.conv (the original
      numbers up levels from the bottom); mid.block_{1,2}; mid.attn_1.{norm,q,k,v,proj_out}
      as 1x1 convolutions [C, C, 1, 1] (diffusers: Linear [C, C]); resnets' nin_shortcut
      (conv_shortcut); quant_conv, post_quant_conv.
  cond_stage_model.transformer.   a transformers 4.x `CLIPTextModel` state dict
      (`text_model.*`, with the `position_ids` buffer).
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint,
                                                 convert_ldm_unet_checkpoint,
                                                 convert_ldm_vae_checkpoint)
from flax import nnx
from safetensors.numpy import load_file, save_file

from t4a_jax.models import load
from t4a_jax.models.clip import CLIPTextModel
from t4a_jax.models.unet import UNet
from t4a_jax.models.vae import AutoencoderKL as JaxAutoencoderKL
from tools.convert_weights.clip import load_clip_text_folder
from tools.convert_weights.sources import load_weights, read_json
from tools.convert_weights.unet import convert_unet, load_diffusers_unet
from tools.convert_weights.vae import convert_vae, load_diffusers_vae
from test_convert_cli import (_assert_same_model, _assert_same_params, _run,  # noqa: F401
                              pipeline)  # a module-scoped fixture, built once here
from torch_utils import nchw, nhwc

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3",
               "conv_shortcut": "skip_connection"}
UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                 "to_out.0": "proj_out"}
# What a real checkpoint holds besides the three models (EMA state, the noise schedule).
EXTRAS = {"model_ema.decay": np.array(0.9999, np.float32),
          "model_ema.num_updates": np.array(1000, np.int32),
          "model_ema.diffusion_modelout2bias": np.zeros(4, np.float32),
          "betas": np.linspace(8.5e-4, 1.2e-2, 1000, dtype=np.float32),
          "alphas_cumprod": np.cumprod(1 - np.linspace(8.5e-4, 1.2e-2, 1000, dtype=np.float32)),
          "logvar": np.zeros(1000, np.float32)}


def _ldm_unet_key(key: str, state: dict, layers_per_block: int) -> str:
    """The original name of the diffusers U-Net key `key` (without the prefix)."""
    per_level = layers_per_block + 1
    resnet = lambda rest: (lambda name, tail: f"{UNET_RESNET[name]}.{tail}")(*rest.split(".", 1))
    head, leaf = key.rsplit(".", 1)
    if head in UNET_FIXED:
        return f"{UNET_FIXED[head]}.{leaf}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = 1 + int(m[1]) * per_level + int(m[3])
        return f"input_blocks.{i}.0.{resnet(m[4])}" if m[2] == "resnets" else \
            f"input_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_level + layers_per_block}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = int(m[1]) * per_level + int(m[3])
        return f"output_blocks.{i}.0.{resnet(m[4])}" if m[2] == "resnets" else \
            f"output_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        with_attention = any(k.startswith(f"up_blocks.{m[1]}.attentions.") for k in state)
        return (f"output_blocks.{int(m[1]) * per_level + layers_per_block}."
                f"{2 if with_attention else 1}.conv.{m[2]}")
    raise KeyError(f"no original name for U-Net key {key}")


def _ldm_vae_key(key: str, num_up_blocks: int) -> str:
    """The original name of the diffusers VAE key `key` (without the prefix)."""
    resnet = lambda name: "nin_shortcut" if name == "conv_shortcut" else name
    if re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.\w+|(post_)?quant_conv\.\w+", key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(\w+)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{resnet(m[3])}.{m[4]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.block.{m[2]}.{resnet(m[3])}.{m[4]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(\w+)", key):
        return f"decoder.up.{num_up_blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(\w+)\.(\w+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet(m[3])}.{m[4]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+(?:\.0)?)\.(\w+)",
                         key):
        return f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
    raise KeyError(f"no original name for VAE key {key}")


def original_checkpoint(root) -> dict[str, np.ndarray]:
    """The pipeline folder `root`'s U-Net, VAE and text encoder as one original SD
    checkpoint (see the module docstring), plus `EXTRAS`."""
    unet = load_file(root / "unet" / "diffusion_pytorch_model.safetensors")
    vae = load_file(root / "vae" / "diffusion_pytorch_model.safetensors")
    text = load_file(root / "text_encoder" / "model.safetensors")
    layers_per_block = read_json(root / "unet" / "config.json")["layers_per_block"]
    num_up_blocks = len(read_json(root / "vae" / "config.json")["up_block_types"])
    ldm = {}
    for key, value in unet.items():
        ldm[UNET_PREFIX + _ldm_unet_key(key, unet, layers_per_block)] = value
    for key, value in vae.items():
        name = _ldm_vae_key(key, num_up_blocks)
        # The mid-block attention projections are 1x1 convolutions in the original.
        ldm[VAE_PREFIX + name] = value[:, :, None, None] if (
            ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2) else value
    for key, value in text.items():             # transformers 5.x saves no `text_model.`
        ldm[TEXT_PREFIX + re.sub(r"^(?!text_model\.)", "text_model.", key)] = value
    positions = text["embeddings.position_embedding.weight"].shape[0]
    ldm[TEXT_PREFIX + "text_model.embeddings.position_ids"] = np.arange(positions)[None]
    assert len(ldm) == len(unet) + len(vae) + len(text) + 1      # no two keys collide
    return {**ldm, **EXTRAS}


@pytest.fixture(scope="module")
def ldm(pipeline, tmp_path_factory) -> dict:
    """The original checkpoint as .safetensors and as a Lightning-style torch .ckpt
    ({"state_dict": ..., "global_step": ...})."""
    folder = tmp_path_factory.mktemp("ldm")
    state = original_checkpoint(pipeline["root"])
    save_file(state, folder / "tiny-sd.safetensors")
    torch.save({"state_dict": {k: torch.from_numpy(v.copy())
                               for k, v in state.items()}, "global_step": 1000},
               folder / "tiny-sd.ckpt")
    return {"state": state, "safetensors": folder / "tiny-sd.safetensors",
            "ckpt": folder / "tiny-sd.ckpt"}


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        assert np.shape(actual[key]) == value.shape, key
        np.testing.assert_array_equal(actual[key], value, err_msg=key)


@pytest.mark.parametrize("suffix", ["safetensors", "ckpt"])
def test_original_layout_is_what_diffusers_reads(pipeline, ldm, suffix):
    """diffusers' own single-file converters turn the file back into the folder's state
    dicts exactly, so the reverse mapping above is a faithful original checkpoint."""
    root = pipeline["root"]
    checkpoint = load_weights(ldm[suffix])
    _assert_same_state(checkpoint, ldm["state"])
    configs = {name: read_json(root / name / "config.json") for name in ("unet", "vae")}
    _assert_same_state(convert_ldm_unet_checkpoint(checkpoint, configs["unet"]),
                       load_file(root / "unet" / "diffusion_pytorch_model.safetensors"))
    vae = load_file(root / "vae" / "diffusion_pytorch_model.safetensors")
    assert any(v.ndim == 4 and v.shape[2:] == (1, 1) and k.endswith(".mid.attn_1.q.weight")
               for k, v in checkpoint.items())       # the conv form was written ...
    _assert_same_state(convert_ldm_vae_checkpoint(checkpoint, configs["vae"]), vae)  # ... and read
    # The text encoder comes back with transformers 4.x names (`text_model.*`; the folder,
    # saved by transformers 5.x, has none) and with the `position_ids` buffer that
    # original checkpoints carry and transformers 5.x no longer saves (non-persistent).
    text = convert_ldm_clip_checkpoint(checkpoint)
    position_ids = text.pop("text_model.embeddings.position_ids")
    np.testing.assert_array_equal(position_ids, np.arange(position_ids.shape[1])[None])
    _assert_same_state(text, {re.sub(r"^(?!text_model\.)", "text_model.", k): v for k, v in
                              load_file(root / "text_encoder" / "model.safetensors").items()})


def _jit(model, method: str = "__call__"):
    """`model.<method>` as one jitted function (eager NNX dispatches op by op, slowly)."""
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda state, *args: getattr(nnx.merge(graphdef, state), method)(*args))
    return lambda *args: fn(state, *args)


def _check_output(pipeline, out_root) -> None:
    """OUT of an ldm-ckpt run equals the conversion of the pipeline folder, and its U-Net
    and VAE decoder match the PyTorch models."""
    root, torch_models = pipeline["root"], pipeline["torch"]
    assert sorted(os.listdir(out_root)) == ["text_encoder", "tokenizer", "unet", "vae"]
    unet = load(out_root / "unet")
    assert isinstance(unet, UNet) and not unet.config.motion_modules
    _assert_same_model(unet, convert_unet(*reversed(load_diffusers_unet(root / "unet"))))
    vae = load(out_root / "vae")
    assert isinstance(vae, JaxAutoencoderKL)
    _assert_same_model(vae, convert_vae(*reversed(load_diffusers_vae(root / "vae"))))
    text = load(out_root / "text_encoder")
    assert isinstance(text, CLIPTextModel)
    _assert_same_model(text, load_clip_text_folder(root / "text_encoder")[0])
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        assert (out_root / "tokenizer" / name).read_bytes() == (
            root / "tokenizer" / name).read_bytes()

    rng = np.random.default_rng(0)
    sample = rng.normal(size=(2, 1, 8, 8, 4)).astype(np.float32)
    timesteps, context = np.array([3, 700]), rng.normal(size=(2, 7, 32)).astype(np.float32)
    with torch.no_grad():
        reference = torch_models["unet"](nchw(sample[:, 0]), torch.from_numpy(timesteps),
                                         torch.from_numpy(context)).sample
    np.testing.assert_allclose(_jit(unet)(sample, timesteps, context)[:, 0], nhwc(reference),
                               atol=1e-4)
    z = rng.normal(size=(2, 8, 8, 4)).astype(np.float32)
    with torch.no_grad():
        reference = nhwc(torch_models["vae"].decode(nchw(z)).sample)
    np.testing.assert_allclose(_jit(vae, "decode")(vae.config.scaling_factor * z), reference,
                               atol=1e-4)


def test_ldm_checkpoint_converts_like_the_pipeline_folder(pipeline, ldm, tmp_path, capsys):
    root, src = pipeline["root"], ldm["safetensors"]
    status, out, err = _run(capsys, src, tmp_path / "sd", "--kind", "ldm-ckpt",
                            "--config", root)
    assert status == 0, err
    assert f"{src}: converting as ldm-ckpt" in out
    counts = {name: sum(k.startswith(prefix) for k in ldm["state"]) for name, prefix in
              (("unet", UNET_PREFIX), ("vae", VAE_PREFIX), ("text_encoder", TEXT_PREFIX))}
    for name, count in counts.items():             # position_ids counts (as ignored)
        assert f"{src} [{name}, via diffusers]: {count} tensors converted" in out
    # Keys outside the three models are listed, not converted and not an error.
    note = next(line for line in out.splitlines() if "not converted" in line)
    assert f"{len(EXTRAS)} keys" in note
    for head in {k.split(".")[0] for k in EXTRAS}:
        assert head in note
    assert sorted(os.listdir(tmp_path)) == ["sd"]                    # no staging left
    _check_output(pipeline, tmp_path / "sd")


def test_torch_ckpt_is_detected(pipeline, ldm, tmp_path, capsys):
    """`--kind auto` takes a .ckpt file for an original checkpoint; a Lightning
    {"state_dict": ...} wrapper is unwrapped; --dtype reaches the U-Net and VAE."""
    root, src = pipeline["root"], ldm["ckpt"]
    status, out, err = _run(capsys, src, tmp_path / "sd", "--config", root,
                            "--dtype", "bfloat16")
    assert status == 0, err
    assert f"{src}: converting as ldm-ckpt" in out
    assert "text_encoder: written with float32 compute" in out
    unet, vae = load(tmp_path / "sd" / "unet"), load(tmp_path / "sd" / "vae")
    assert unet.config.dtype == jnp.bfloat16 and vae.config.dtype == jnp.bfloat16
    # Parameters stay float32: the same as from the folder.
    _assert_same_params(unet, convert_unet(*reversed(load_diffusers_unet(root / "unet"))))

    # Without --config the run stops before writing anything.
    status, _, err = _run(capsys, src, tmp_path / "nocfg")
    assert status == 1 and "needs --config DIR" in err
    assert not (tmp_path / "nocfg").exists()


# (keys added, keys removed, what the error must say): every case names the key, by its
# original name where the CLI sees it, by diffusers' name where diffusers renamed it first.
BAD_CASES = {
    # A key in the U-Net's namespace that no diffusers converter takes.
    "unknown": ({UNET_PREFIX + "bogus.weight": np.zeros(3, np.float32)}, [],
                ["1 keys that diffusers' converters did not use",
                 UNET_PREFIX + "bogus.weight"]),
    # One inside a resnet: diffusers renames it with its block, the U-Net refuses it.
    "unknown_in_block": ({UNET_PREFIX + "input_blocks.1.0.bogus.weight":
                          np.zeros(3, np.float32)}, [],
                         ["1 unused keys: down_blocks.0.resnets.0.bogus.weight"]),
    # out.2.bias is conv_out.bias to diffusers and to t4a_jax.
    "missing": ({}, [UNET_PREFIX + "out.2.bias"], ["1 missing parameters: conv_out.bias"]),
    # diffusers indexes an upsampler's bias without looking (a KeyError inside it).
    "missing_upsampler_bias": ({}, [UNET_PREFIX + "output_blocks.1.1.conv.bias"],
                               ["needs output_blocks.1.1.conv.bias"]),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_ldm_checkpoint_fails_and_writes_nothing(pipeline, ldm, tmp_path, capsys, case):
    add, drop, expected = BAD_CASES[case]
    assert all(k in ldm["state"] for k in drop) and not any(k in ldm["state"] for k in add)
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "bad.safetensors"
    save_file({**{k: v for k, v in ldm["state"].items() if k not in drop}, **add}, src)
    status, out, err = _run(capsys, src, tmp_path / "out", "--config", pipeline["root"])
    assert status == 1, out
    assert err.startswith(f"error: {src}")
    for text in expected:
        assert text in err, err
    assert sorted(os.listdir(tmp_path)) == ["in"]               # no OUT, no staging
