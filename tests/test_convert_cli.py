"""`python -m tools.convert_weights` (run in-process through `cli.main`) on tiny random
diffusers/transformers models saved with `save_pretrained`: what it writes loads with
`t4a_jax.models.load` and equals a direct conversion; bad folders fail loudly and write
nothing."""

from __future__ import annotations

import json
import os
import re
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
from flax import nnx
from safetensors.numpy import load_file, save_file

from t4a_jax.models import load
from t4a_jax.models.clip import CLIPTextModel
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.unet import UNet
from t4a_jax.models.vae import AutoencoderKL as JaxAutoencoderKL
from tools.convert_weights import cli
from tools.convert_weights.clip import load_clip_text_folder
from tools.convert_weights.unet import convert_unet, load_diffusers_unet
from tools.convert_weights.vae import convert_vae, load_diffusers_vae
from torch_utils import TORCH_ADAPTER, TORCH_UNET, nchw, nhwc, randomize_

TORCH_VAE = dict(down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
                 layers_per_block=1, norm_num_groups=8, sample_size=16)
TORCH_TEXT = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
                  hidden_act="quick_gelu")
MODEL_INDEX = {"_class_name": "AnimateDiffPipeline", "_diffusers_version": "0.42.0",
               "unet": ["diffusers", "UNet2DConditionModel"],
               "motion_adapter": ["diffusers", "MotionAdapter"],
               "vae": ["diffusers", "AutoencoderKL"],
               "text_encoder": ["transformers", "CLIPTextModel"],
               "tokenizer": ["transformers", "CLIPTokenizer"],
               "scheduler": ["diffusers", "DDIMScheduler"],
               "feature_extractor": [None, None]}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict:
    """A pipeline root with tiny random components; returns the folders and torch models."""
    root = tmp_path_factory.mktemp("sd")
    models = {"unet": randomize_(UNet2DConditionModel(**TORCH_UNET)),
              "motion_adapter": randomize_(MotionAdapter(**TORCH_ADAPTER), seed=1),
              "vae": randomize_(AutoencoderKL(**TORCH_VAE), std=0.05, seed=2),
              "text_encoder": randomize_(transformers.CLIPTextModel(
                  transformers.CLIPTextConfig(**TORCH_TEXT, bos_token_id=0, pad_token_id=1,
                                              eos_token_id=2)), std=0.1, seed=3)}
    for name, model in models.items():
        model.save_pretrained(root / name)
    tokenizer = root / "tokenizer"
    tokenizer.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a": 2, "b</w>": 3, "ab</w>": 4}
    (tokenizer / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    (tokenizer / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<|endoftext|>"}))
    (root / "model_index.json").write_text(json.dumps(MODEL_INDEX))
    return {"root": root, "torch": models}


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _assert_same_params(actual: nnx.Module, expected: nnx.Module) -> None:
    assert type(actual) is type(expected)
    flat = lambda m: {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(m))}
    a, e = flat(actual), flat(expected)
    assert a.keys() == e.keys()
    for path in e:
        np.testing.assert_array_equal(a[path], e[path], err_msg=str(path))


def _assert_same_model(actual: nnx.Module, expected: nnx.Module) -> None:
    assert actual.config == expected.config
    _assert_same_params(actual, expected)


def _direct_unet(root) -> UNet:
    config, state = load_diffusers_unet(root / "unet", motion_adapter=root / "motion_adapter")
    return convert_unet(state, config)


def _tensor_count(folder, name: str = "diffusion_pytorch_model.safetensors") -> int:
    return len(load_file(folder / name))


def test_unet_folder_with_motion_adapter(pipeline, tmp_path, capsys):
    root = pipeline["root"]
    status, out, err = _run(capsys, root / "unet", tmp_path / "unet",
                            "--motion-adapter", root / "motion_adapter")
    assert status == 0, err
    unet = load(tmp_path / "unet")
    _assert_same_model(unet, _direct_unet(root))
    assert unet.config.motion_modules
    count = _tensor_count(root / "unet") + _tensor_count(root / "motion_adapter")
    assert f"{root / 'unet'}: {count} tensors converted" in out
    assert f"-> {tmp_path / 'unet'}: UNet, {cli.parameter_count(unet):,} parameters" in out


def test_pipeline_root(pipeline, tmp_path, capsys):
    root, torch_models = pipeline["root"], pipeline["torch"]
    status, out, err = _run(capsys, root, tmp_path / "sd", "--dtype", "bfloat16")
    assert status == 0, err
    assert sorted(os.listdir(tmp_path)) == ["sd"]
    out_root = tmp_path / "sd"
    assert sorted(os.listdir(out_root)) == ["text_encoder", "tokenizer", "unet", "vae"]
    assert "not converted: scheduler (DDIMScheduler)" in out
    assert "text_encoder: written with float32 compute" in out

    unet = load(out_root / "unet")                    # the MotionAdapter component joined it
    assert unet.config.motion_modules and unet.config.dtype == jnp.bfloat16
    _assert_same_params(unet, _direct_unet(root))     # parameters stay float32
    vae = load(out_root / "vae")
    assert isinstance(vae, JaxAutoencoderKL) and vae.config.dtype == jnp.bfloat16
    _assert_same_params(vae, convert_vae(*reversed(load_diffusers_vae(root / "vae"))))

    text = load(out_root / "text_encoder")
    assert isinstance(text, CLIPTextModel)
    _assert_same_model(text, load_clip_text_folder(root / "text_encoder")[0])
    ids = np.random.default_rng(0).integers(2, 999, size=(2, 9))
    with torch.no_grad():
        reference = torch_models["text_encoder"](torch.from_numpy(ids)).last_hidden_state
    np.testing.assert_allclose(text(jnp.asarray(ids)), reference.numpy(), atol=1e-4)

    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        assert (out_root / "tokenizer" / name).read_bytes() == (
            root / "tokenizer" / name).read_bytes()
    assert CLIPTokenizer.from_folder(out_root / "tokenizer").tokenize(["ab"])[0, 1] == 4


def test_vae_and_text_folders_match_pytorch(pipeline, tmp_path, capsys):
    root, torch_models = pipeline["root"], pipeline["torch"]
    status, out, err = _run(capsys, root / "vae", tmp_path / "vae")
    assert status == 0, err
    assert f"{root / 'vae'}: {_tensor_count(root / 'vae')} tensors converted" in out
    z = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype(np.float32)
    with torch.no_grad():
        reference = nhwc(torch_models["vae"].decode(nchw(z)).sample)
    vae = load(tmp_path / "vae")
    np.testing.assert_allclose(vae.decode(vae.config.scaling_factor * z), reference,
                               atol=1e-4)

    status, out, err = _run(capsys, root / "text_encoder", tmp_path / "text")
    assert status == 0, err
    assert re.search(rf"{re.escape(str(root / 'text_encoder'))}: \d+ tensors converted", out)
    assert isinstance(load(tmp_path / "text"), CLIPTextModel)
    status, _, err = _run(capsys, root / "text_encoder", tmp_path / "bf16", "--dtype",
                          "bfloat16")
    assert status == 1 and "CLIP towers take their compute dtype" in err


def test_bad_sources_fail_and_write_nothing(pipeline, tmp_path, capsys):
    root = pipeline["root"]
    bad = tmp_path / "vae_extra"
    bad.mkdir()
    (bad / "config.json").write_bytes((root / "vae" / "config.json").read_bytes())
    state = load_file(root / "vae" / "diffusion_pytorch_model.safetensors")
    state["decoder.bogus.weight"] = np.zeros(3, np.float32)
    save_file(state, bad / "diffusion_pytorch_model.safetensors")
    status, out, err = _run(capsys, bad, tmp_path / "out")
    assert status == 1
    assert "unused keys: decoder.bogus.weight" in err and str(bad) in err
    assert sorted(os.listdir(tmp_path)) == ["vae_extra"]        # no OUT, no temporaries

    status, _, err = _run(capsys, root / "motion_adapter", tmp_path / "out")
    assert status == 1
    assert "holds a MotionAdapter" in err and "--motion-adapter" in err

    status, _, err = _run(capsys, root / "vae", tmp_path / "out", "--allow-missing", "conv")
    assert status == 1 and "--allow-missing is not supported by --kind vae" in err

    # A U-Net without conv_out.bias: refused, unless --allow-missing lets it start at zero.
    partial = tmp_path / "unet_partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((root / "unet" / "config.json").read_bytes())
    state = load_file(root / "unet" / "diffusion_pytorch_model.safetensors")
    del state["conv_out.bias"]
    save_file(state, partial / "diffusion_pytorch_model.safetensors")
    status, _, err = _run(capsys, partial, tmp_path / "out")
    assert status == 1 and "1 missing parameters: conv_out.bias" in err
    status, out, err = _run(capsys, partial, tmp_path / "out", "--allow-missing", r"^conv_out\.")
    assert status == 0, err
    assert "(--allow-missing): 1: conv_out.bias" in out
    assert not np.asarray(load(tmp_path / "out").conv_out.bias[...]).any()
    shutil.rmtree(tmp_path / "out")

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    status, _, err = _run(capsys, root / "vae", tmp_path / "full")
    assert status == 1 and "--overwrite" in err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def _original_animatediff(adapter: MotionAdapter) -> dict[str, torch.Tensor]:
    """The adapter's state dict in AnimateDiff's original layout (mm_sd_v15_v2.ckpt):
    `temporal_transformer.`, `attention_blocks.{0,1}`, `norms.{0,1}`, `ff_norm`, and a
    `pos_encoder.pe` table in each attention block."""
    renames = ((r"(motion_modules\.\d+)\.", r"\1.temporal_transformer."),
               (r"\.attn([12])\.", lambda m: f".attention_blocks.{int(m[1]) - 1}."),
               (r"\.norm([12])\.", lambda m: f".norms.{int(m[1]) - 1}."),
               (r"\.norm3\.", ".ff_norm."))
    state = {}
    for key, value in adapter.state_dict().items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        if key.endswith(".pos_embed.pe"):
            for block in (0, 1):
                state[key.replace(".pos_embed.", f".attention_blocks.{block}.pos_encoder.")] = value
        else:
            state[key] = value
    return state


def test_original_animatediff_checkpoint(pipeline, tmp_path, capsys):
    root = pipeline["root"]
    # Original checkpoints do not record the heads: AnimateDiff's 8 are assumed.
    adapter = randomize_(MotionAdapter(**{**TORCH_ADAPTER, "motion_num_attention_heads": 8}),
                         seed=4)
    adapter.save_pretrained(tmp_path / "adapter")
    checkpoint = tmp_path / "mm_tiny.ckpt"
    torch.save(_original_animatediff(adapter), checkpoint)
    status, out, err = _run(capsys, root / "unet", tmp_path / "unet",
                            "--motion-adapter", checkpoint)
    assert status == 0, err
    config, state = load_diffusers_unet(root / "unet", motion_adapter=tmp_path / "adapter")
    _assert_same_model(load(tmp_path / "unet"), convert_unet(state, config))
    assert sorted(os.listdir(tmp_path)) == ["adapter", "mm_tiny.ckpt", "unet"]  # no staging

    # Motion modules alone are not a model.
    status, _, err = _run(capsys, checkpoint, tmp_path / "mm")
    assert status == 1 and "pass it as --motion-adapter" in err
