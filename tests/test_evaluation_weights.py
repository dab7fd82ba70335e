"""The evaluation networks' conversions (`--kind clip`, `--kind aesthetic-head`) against
transformers' CLIPModel and a torch Linear at random weights, through the CLI."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from t4a_jax.models import load
from t4a_jax.models.aesthetic import AestheticHead
from t4a_jax.models.clip import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
from t4a_jax.models.tokenizer import CLIPTokenizer
from test_clip import TEXT_HF, VISION_HF, _ids, _write_tokenizer_folder
from tools.convert_weights import cli
from tools.convert_weights.clip import convert_clip_model
from tools.convert_weights.core import ConversionError
from torch_utils import nchw, numpy_state_dict, randomize_


def _torch_clip():
    config = transformers.CLIPConfig(
        text_config={**TEXT_HF, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 999},
        vision_config=VISION_HF, projection_dim=24)
    return randomize_(transformers.CLIPModel(config), std=0.1).eval()


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_clip_model_towers_give_transformers_embeddings_and_cosines():
    torch_model = _torch_clip()
    (vision, _), (text, _), rest = convert_clip_model(numpy_state_dict(torch_model),
                                                      torch_model.config.to_dict())
    assert rest == ["logit_scale"]
    ids = _ids(999)
    pixels = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        out = torch_model(input_ids=torch.from_numpy(ids), pixel_values=nchw(pixels))
    image_embeds, text_embeds = vision(jnp.asarray(pixels)), text(jnp.asarray(ids))
    assert image_embeds.shape == (2, 24) and text_embeds.shape == (3, 24)
    # transformers normalises both embeddings; the logits are scaled cosines.
    np.testing.assert_allclose(_unit(image_embeds), out.image_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(_unit(text_embeds), out.text_embeds.numpy(), atol=1e-5)
    scale = torch_model.logit_scale.exp().item()
    np.testing.assert_allclose(scale * _unit(image_embeds) @ _unit(text_embeds).T,
                               out.logits_per_image.numpy(), atol=1e-4, rtol=1e-5)


def test_clip_model_keys_of_neither_tower_are_named():
    torch_model = _torch_clip()
    state = numpy_state_dict(torch_model)
    with pytest.raises(ConversionError, match="keys of neither tower: extra.bias"):
        convert_clip_model({**state, "extra.bias": np.zeros(2)}, torch_model.config.to_dict())
    vision_only = {k: v for k, v in state.items() if k.startswith("vision_model.")}
    with pytest.raises(ConversionError, match="needs both towers"):
        convert_clip_model(vision_only, torch_model.config.to_dict())


def test_cli_converts_a_clip_folder_into_towers_and_tokenizer(tmp_path, capsys):
    torch_model = _torch_clip()
    source = tmp_path / "clip"
    torch_model.save_pretrained(source)
    _write_tokenizer_folder(source)
    out = tmp_path / "weights" / "clip"
    assert cli.main([str(source), str(out)]) == 0, capsys.readouterr().err  # kind detected
    assert "not converted: logit_scale" in capsys.readouterr().out
    vision, text = load(out / "vision"), load(out / "text")
    assert isinstance(vision, CLIPVisionModelWithProjection)
    assert isinstance(text, CLIPTextModelWithProjection)
    tokenizer = CLIPTokenizer.from_folder(out / "tokenizer")
    ids = _ids(999)
    with torch.no_grad():
        expected = torch_model.get_text_features(input_ids=torch.from_numpy(ids))
    expected = getattr(expected, "pooler_output", expected)   # transformers 5 may wrap it
    np.testing.assert_allclose(text(jnp.asarray(ids)), expected.numpy(), atol=1e-4)
    assert tokenizer.tokenize(["photo"]).shape == (1, 77)


def test_cli_converts_the_aesthetic_head_and_names_a_wrong_file(tmp_path, capsys):
    linear = torch.nn.Linear(8, 1)
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save(linear.state_dict(), path)
    out = tmp_path / "aesthetic"
    assert cli.main([str(path), str(out), "--kind", "aesthetic-head"]) == 0, \
        capsys.readouterr().err
    head = load(out)
    assert isinstance(head, AestheticHead) and head.config.in_features == 8
    embeds = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    with torch.no_grad():
        expected = linear(torch.from_numpy(embeds))[:, 0].numpy()
    np.testing.assert_allclose(head(jnp.asarray(embeds)), expected, atol=1e-6)

    bad = tmp_path / "mlp.pth"
    torch.save(torch.nn.Linear(8, 3).state_dict(), bad)
    assert cli.main([str(bad), str(tmp_path / "x"), "--kind", "aesthetic-head"]) == 1
    assert "Linear(D, 1)" in capsys.readouterr().err and not (tmp_path / "x").exists()
