"""CLIP towers and tokenizer against transformers' PyTorch CLIP on tiny random models."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from t4a_jax.models.clip import CLIPTextConfig, CLIPVisionConfig, preprocess_images
from t4a_jax.models.tokenizer import CLIPTokenizer, bytes_to_unicode
from tools.convert_weights.clip import (IGNORED_MARK, convert_clip_text, convert_clip_vision,
                                        load_clip_text_folder, load_clip_vision_folder,
                                        load_hf_folder)
from tools.convert_weights.core import ConversionError
from torch_utils import nchw, numpy_state_dict, randomize_

RNG = np.random.default_rng(0)
TEXT_HF = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, max_position_embeddings=16, projection_dim=16,
               hidden_act="quick_gelu")
VISION_HF = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, image_size=16, patch_size=4, projection_dim=24,
                 hidden_act="gelu")


def _torch_text(eos_token_id: int = 2):
    config = transformers.CLIPTextConfig(**TEXT_HF, bos_token_id=0, pad_token_id=1,
                                         eos_token_id=eos_token_id)
    return randomize_(transformers.CLIPTextModel(config), std=0.1)


def _torch_vision():
    config = transformers.CLIPVisionConfig(**VISION_HF)
    return randomize_(transformers.CLIPVisionModelWithProjection(config), std=0.1)


def _ids(eos: int) -> np.ndarray:
    ids = RNG.integers(3, 900, size=(3, 12))
    for row, end in enumerate((5, 11, 8)):      # EOS, then padding with EOS
        ids[row, end:] = eos
    return ids


def test_configs_read_transformers_dicts():
    assert CLIPTextConfig.from_hf_dict({**TEXT_HF, "eos_token_id": 2}) == CLIPTextConfig.tiny()
    assert CLIPVisionConfig.from_hf_dict(VISION_HF) == CLIPVisionConfig.tiny()
    full = transformers.CLIPConfig(text_config=TEXT_HF, vision_config=VISION_HF,
                                   projection_dim=24).to_dict()
    assert CLIPVisionConfig.from_hf_dict(full) == CLIPVisionConfig.tiny()
    assert CLIPTextConfig.from_hf_dict(full).hidden_size == 32
    # Keys a diff-saved config.json omits take transformers' defaults.
    assert CLIPVisionConfig.from_hf_dict({}).patch_size == 32
    with pytest.raises(ValueError, match="hidden_act 'swish'"):
        CLIPTextConfig.from_hf_dict({**TEXT_HF, "hidden_act": "swish"})


@pytest.mark.parametrize("eos_token_id", [2, 999])
def test_text_model_matches_transformers(eos_token_id):
    torch_model = _torch_text(eos_token_id)
    state = numpy_state_dict(torch_model)
    state["embeddings.position_ids"] = np.arange(16)[None]      # as old checkpoints hold
    model, report = convert_clip_text(state, torch_model.config.to_dict())
    assert report.consumed["embeddings.position_ids"] == IGNORED_MARK
    assert report.consumed["embeddings.token_embedding.weight"] == (
        "text_model.embeddings.token_embedding.embedding")
    ids = _ids(999)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(ids))
    hidden, pooled = model(jnp.asarray(ids), return_pooled=True)
    np.testing.assert_allclose(hidden, expected.last_hidden_state.numpy(), atol=1e-4)
    np.testing.assert_allclose(pooled, expected.pooler_output.numpy(), atol=1e-4)


def test_text_model_loads_prefixed_checkpoints_and_names_bad_keys():
    state = numpy_state_dict(_torch_text())
    prefixed = {f"text_model.{k}": v for k, v in state.items()}      # SD1.5 / 4.x layout
    model, _ = convert_clip_text(prefixed, CLIPTextConfig.tiny())
    reference, _ = convert_clip_text(state, CLIPTextConfig.tiny())
    ids = jnp.asarray(_ids(999))
    np.testing.assert_array_equal(model(ids), reference(ids))
    bad = dict(prefixed)
    bad["text_model.text_projection.weight"] = np.zeros((16, 32), np.float32)
    del bad["text_model.final_layer_norm.bias"]
    with pytest.raises(ConversionError) as info:
        convert_clip_text(bad, CLIPTextConfig.tiny(), source="sd15/text_encoder")
    for fragment in ("sd15/text_encoder", "text_projection.weight",
                     "text_model.final_layer_norm.bias"):
        assert fragment in str(info.value)


def test_vision_model_matches_transformers():
    torch_model = _torch_vision()
    model, _ = convert_clip_vision(numpy_state_dict(torch_model), torch_model.config.to_dict())
    pixels = RNG.normal(size=(2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(nchw(pixels), output_hidden_states=True)
    embeds, states = model(jnp.asarray(pixels), output_hidden_states=True)
    np.testing.assert_allclose(embeds, expected.image_embeds.numpy(), atol=1e-4)
    assert len(states) == len(expected.hidden_states) == 3
    for ours, theirs in zip(states, expected.hidden_states):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="channels-last"):
        model(jnp.zeros((1, 3, 16, 16)))


def test_hf_folders_round_trip(tmp_path):
    text, vision = _torch_text(), _torch_vision()
    text.save_pretrained(tmp_path / "text_encoder")
    vision.save_pretrained(tmp_path / "image_encoder")
    config, state = load_hf_folder(tmp_path / "image_encoder")
    assert config["hidden_act"] == "gelu" and state["visual_projection.weight"].shape == (24, 32)

    text_model, _ = load_clip_text_folder(tmp_path / "text_encoder")
    vision_model, _ = load_clip_vision_folder(tmp_path / "image_encoder")
    ids = _ids(999)
    pixels = RNG.normal(size=(1, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(text_model(jnp.asarray(ids)),
                                   text(torch.from_numpy(ids)).last_hidden_state, atol=1e-4)
        np.testing.assert_allclose(vision_model(jnp.asarray(pixels)),
                                   vision(nchw(pixels)).image_embeds, atol=1e-4)

    # pytorch_model.bin (torch.load, weights_only) with a legacy position_ids buffer.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(text.config.to_dict()))
    torch_state = {f"text_model.{k}": v for k, v in text.state_dict().items()}
    torch_state["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    torch.save(torch_state, legacy / "pytorch_model.bin")
    legacy_model, report = load_clip_text_folder(legacy)
    assert report.consumed["text_model.embeddings.position_ids"] == IGNORED_MARK
    np.testing.assert_array_equal(legacy_model(jnp.asarray(ids)), text_model(jnp.asarray(ids)))

    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_folder(tmp_path)


def test_preprocess_images_resizes_crops_and_normalises():
    images = jnp.full((2, 40, 60, 3), 0.5)
    pixels = preprocess_images(images, 16)
    assert pixels.shape == (2, 16, 16, 3)
    expected = (0.5 - np.array([0.48145466, 0.4578275, 0.40821073])) / np.array(
        [0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=1e-5)


# --- tokenizer ----------------------------------------------------------------------------

MERGE_WORDS = ["a", "photo", "of", "the", "cat", "dog", "jumping", "on", "ing", "3d",
               "model", "'s", "!!", "hello", "café"]
PROMPTS = [
    "a photo of a cat",
    "A Photo of THE   dog,\tjumping!!  ",
    "the cat's 3D model costs $12.50 -- isn't it 100% great?!",
    "  leading and trailing whitespace\n\nnewlines ",
    "Ünïcödé café naïve 北京 emoji 🙂 ok",
    "<|startoftext|>special tokens<|endoftext|> in text",
    "",
    " ".join(["jumping dog number 7,"] * 30),        # far more than 77 tokens
]


def _write_tokenizer_folder(path) -> None:
    """A small CLIP vocabulary: the byte alphabet with and without `</w>`, the merges that
    build a few words (learnt greedily, pair by pair, as BPE training would), specials."""
    alphabet = list(bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    byte_map = bytes_to_unicode()
    for word in MERGE_WORDS:
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:          # merge left to right: a (ab)c -> abc chain
            pair = (symbols[0], symbols[1])
            if pair not in merges:
                merges.append(pair)
                vocab.append(pair[0] + pair[1])
            symbols = [pair[0] + pair[1]] + symbols[2:]
    # A merge for a word's inside, so ranks rather than order decide ("ing" in "jumping").
    for pair in [("i", "n"), ("in", "g</w>")]:
        if pair not in merges:
            merges.insert(0, pair)
            vocab.append(pair[0] + pair[1])
    vocab = list(dict.fromkeys(vocab)) + ["<|startoftext|>", "<|endoftext|>"]
    path.mkdir(exist_ok=True)
    (path / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}),
                                     encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "".join(
        f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def test_tokenizer_matches_transformers(tmp_path):
    _write_tokenizer_folder(tmp_path)
    ours = CLIPTokenizer.from_folder(tmp_path)
    theirs = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
    expected = theirs(PROMPTS, padding="max_length", max_length=77, truncation=True,
                      return_tensors="np").input_ids
    ids = ours.tokenize(PROMPTS)
    assert ids.dtype == np.int32 and ids.shape == (len(PROMPTS), 77)
    np.testing.assert_array_equal(ids, expected)
    # BOS first, EOS kept when truncating, padding with the pad id (= EOS, as SD1.5).
    assert ids[-1, 0] == ours.bos_id and ids[-1, -1] == ours.eos_id
    assert ours.pad_id == ours.eos_id == theirs.pad_token_id
    # Merges really fire: "photo" is one token.
    assert ours.encode("photo") == [ours.vocab["photo</w>"]]


def test_tokenizer_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        CLIPTokenizer.from_folder(tmp_path)
    _write_tokenizer_folder(tmp_path)
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"}))
    with pytest.raises(ValueError, match="pad_token '<pad>'"):
        CLIPTokenizer.from_folder(tmp_path)
