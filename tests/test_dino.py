"""DINO ViT (`t4a_jax.models.dino`) against transformers' PyTorch `ViTModel` (the model
of `facebook/dino-vitb16`) at random weights and tiny sizes, through the converter
(`tools/convert_weights/dino.py`) from both key sets: transformers' and the original
repository's (= timm's `vit_base_patch16_224.dino`), the latter written from the HF
model by the correspondence of transformers' own DINO conversion script."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from t4a_jax.models import load  # noqa: E402
from t4a_jax.models.dino import DINOConfig, DINOViT  # noqa: E402
from tools.convert_weights import cli  # noqa: E402
from tools.convert_weights.core import ConversionError  # noqa: E402
from tools.convert_weights.dino import HEAD_MARK, convert_dino, infer_config  # noqa: E402

from torch_utils import randomize_  # noqa: E402

TINY = DINOConfig.tiny()


def _hf_model(seed: int = 0, hidden: int = TINY.hidden_size,
              heads: int = TINY.num_attention_heads):
    torch.manual_seed(seed)
    config = transformers.ViTConfig(
        hidden_size=hidden, num_hidden_layers=TINY.num_hidden_layers,
        num_attention_heads=heads, intermediate_size=TINY.mlp_ratio * hidden,
        image_size=TINY.image_size,
        patch_size=TINY.patch_size, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True)
    model = transformers.ViTModel(config, add_pooling_layer=False).eval()
    randomize_(model, seed)
    return model


LAYER_PARTS = (("norm1", "layernorm_before", "layernorm_before"),
               ("norm2", "layernorm_after", "layernorm_after"),
               ("attn.proj", "attention.o_proj", "attention.output.dense"),
               ("mlp.fc1", "mlp.fc1", "intermediate.dense"),
               ("mlp.fc2", "mlp.fc2", "output.dense"))


def _hub_keys(state: dict) -> dict:
    """transformers 5's module names -> those of its hub files (`facebook/dino-vitb16`,
    transformers 4), by the table of LAYER_PARTS."""
    out = {k: v for k, v in state.items() if not k.startswith("layers.")}
    for i in range(TINY.num_hidden_layers):
        new, old = f"layers.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for _, v5, v4 in LAYER_PARTS:
                out[old + f"{v4}.{kind}"] = state[new + f"{v5}.{kind}"]
            for v5, v4 in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
                out[old + f"attention.attention.{v4}.{kind}"] = state[
                    new + f"attention.{v5}.{kind}"]
    return out


def _original_keys(state: dict) -> dict:
    """The original DINO / timm key names (fused qkv) of a transformers 5 state dict."""
    out = {"cls_token": state["embeddings.cls_token"],
           "pos_embed": state["embeddings.position_embeddings"],
           "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}
    for i in range(TINY.num_hidden_layers):
        new, orig = f"layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[orig + f"attn.qkv.{kind}"] = np.concatenate(
                [state[new + f"attention.{n}_proj.{kind}"] for n in "qkv"])
            for name, v5, _ in LAYER_PARTS:
                out[orig + f"{name}.{kind}"] = state[new + f"{v5}.{kind}"]
    return out


def _reference(model, pixels_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        hidden = model(torch.from_numpy(pixels_nhwc).permute(0, 3, 1, 2)).last_hidden_state
    return hidden[:, 0].numpy()


@pytest.mark.parametrize("keys", ["transformers5", "hub", "original"])
def test_dino_cls_feature_matches_transformers_vit(keys):
    model = _hf_model()
    hf_state = {k: v.numpy() for k, v in model.state_dict().items()}
    state = {"transformers5": lambda s: s,
             "hub": lambda s: {f"vit.{k}": v for k, v in _hub_keys(s).items()},
             "original": lambda s: {**_original_keys(s),
                                    "head.last_layer.weight": np.zeros((3, 32))}}[keys](hf_state)
    ours, report = convert_dino(state, TINY)
    if keys == "original":
        assert report.consumed["head.last_layer.weight"] == HEAD_MARK
    pixels = np.random.default_rng(1).normal(size=(3, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(pixels))),
                               _reference(model, pixels), atol=2e-5, rtol=1e-4)


def test_sizes_are_read_from_the_tensors_and_bad_checkpoints_are_named():
    hf_state = {k: v.numpy() for k, v in _hf_model().state_dict().items()}
    inferred = infer_config(_original_keys(hf_state), "x")
    assert (inferred.hidden_size, inferred.num_hidden_layers, inferred.mlp_ratio,
            inferred.image_size, inferred.patch_size) == (32, 2, 4, 16, 4)
    with pytest.raises(ConversionError, match="bad.pth: no 'cls_token'"):
        convert_dino({"foo": np.zeros(3)}, source="bad.pth")
    state = _original_keys(hf_state)
    state["blocks.0.mlp.fc9.weight"] = np.zeros((4, 4))
    with pytest.raises(ConversionError, match="unused keys: blocks.0.mlp.fc9.weight"):
        convert_dino(state, TINY)


def test_cli_converts_a_dino_file_and_the_checkpoint_loads_back(tmp_path, capsys):
    """A training-checkpoint-style file (`module.backbone.` prefixes) with 64-wide heads,
    as every released DINO ViT has: the CLI infers all sizes, and the saved checkpoint
    gives the reference feature."""
    model = _hf_model(seed=3, hidden=128, heads=2)
    hf_state = {k: v.numpy() for k, v in model.state_dict().items()}
    path = tmp_path / "dino_tiny.pth"
    torch.save({f"module.backbone.{k}": torch.from_numpy(np.ascontiguousarray(v))
                for k, v in _original_keys(hf_state).items()}, path)
    out = tmp_path / "dino"
    assert cli.main([str(path), str(out), "--kind", "dino"]) == 0, capsys.readouterr().err
    loaded = load(out)
    assert isinstance(loaded, DINOViT)
    assert loaded.config == DINOConfig(hidden_size=128, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=16, patch_size=4)
    pixels = np.random.default_rng(2).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(jnp.asarray(pixels))),
                               _reference(model, pixels), atol=2e-5, rtol=1e-4)
