"""Model directories (`t4a_jax.models.load_bundle` / `save_bundle`, `CLIPTokenizer.save`)
and `python -m t4a_jax.sample` (`run(config)`, configs/sample.py) on a tiny random
MV-VDM bundle: round trips of every parameter and the tokenizer, errors naming the
missing component, the written video (frames, the views side by side, the per-view
files), determinism for a seed, defaults from the bundle's sampling.json, and errors for
a missing checkpoint or object and a size the U-Net cannot take."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from t4a_jax import sample, sampling
from t4a_jax.config_files import get_config
from t4a_jax.models import ModelBundle, load_bundle, save_bundle
from t4a_jax.models.bundle import COMPONENTS, SamplingDefaults
from t4a_jax.models.clip import CLIPTextConfig, CLIPTextModel
from t4a_jax.models.io import save
from t4a_jax.models.tokenizer import BOS_TOKEN, EOS_TOKEN, CLIPTokenizer, bytes_to_unicode
from t4a_jax.reconstruction.clips import load_clip
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.video import read_video
from tiny_models import random_model, tiny_mvvdm_models

REPO = pathlib.Path(__file__).resolve().parents[1]
V, F, SIZE, STEPS = 4, 4, 32, 2
PROMPTS = ["a dog is running", "Dogs run!", "a cat"]


def _tokenizer(max_length: int = 16, **kwargs) -> CLIPTokenizer:
    """The byte alphabet with and without `</w>` and two merges ('d o', 'do g</w>')."""
    alphabet = list(bytes_to_unicode().values())
    tokens = (alphabet + [c + "</w>" for c in alphabet] + ["do", "dog</w>"]
              + [BOS_TOKEN, EOS_TOKEN])
    return CLIPTokenizer({t: i for i, t in enumerate(tokens)}, [("d", "o"), ("do", "g</w>")],
                         max_length=max_length, **kwargs)


def _params(model: nnx.Module) -> dict:
    return {path: np.asarray(value) for path, value in
            jax.tree_util.tree_leaves_with_path(nnx.state(model))}


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """A two-level MV-VDM U-Net with every part on (cameras, multi-view attention, I2V,
    IP-Adapter, spatio-temporal motion modules) and the tiny VAE and CLIP towers."""
    return ModelBundle(**tiny_mvvdm_models(_tokenizer()))


@pytest.fixture(scope="module")
def bundle_dir(bundle, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("bundle") / "models")
    save_bundle(bundle, path)
    return path


def _copy_without(bundle_dir: str, tmp_path, *names: str) -> str:
    copy = str(tmp_path / "models")
    shutil.copytree(bundle_dir, copy)
    for name in names:
        shutil.rmtree(os.path.join(copy, name))
    return copy


def test_tokenizer_save_round_trip(tmp_path):
    tokenizer = _tokenizer(pad_token=BOS_TOKEN)
    tokenizer.save(tmp_path / "tokenizer")
    restored = CLIPTokenizer.from_folder(tmp_path / "tokenizer", max_length=16)
    assert restored.vocab == tokenizer.vocab and restored.ranks == tokenizer.ranks
    assert restored.pad_id == tokenizer.vocab[BOS_TOKEN]
    np.testing.assert_array_equal(restored(PROMPTS), tokenizer(PROMPTS))
    assert tokenizer.vocab["dog</w>"] in tokenizer(["dog"])[0]      # the merges applied
    with pytest.raises(ValueError, match="from_folder could not restore"):
        _tokenizer(unk_token=BOS_TOKEN).save(tmp_path / "other")
    assert sorted(os.listdir(tmp_path)) == ["tokenizer"]


def test_bundle_round_trip(bundle, bundle_dir):
    assert sorted(os.listdir(bundle_dir)) == sorted(COMPONENTS)
    loaded = load_bundle(bundle_dir)
    for name in ("unet", "vae", "text_encoder", "image_encoder"):
        model, restored = getattr(bundle, name), getattr(loaded, name)
        assert type(restored) is type(model) and restored.config == model.config, name
        expected, got = _params(model), _params(restored)
        assert got.keys() == expected.keys(), name
        for path, value in expected.items():
            np.testing.assert_array_equal(got[path], value, err_msg=f"{name} {path}")
    assert loaded.tokenizer.max_length == CLIPTextConfig.tiny().max_position_embeddings
    np.testing.assert_array_equal(loaded.tokenizer(PROMPTS), bundle.tokenizer(PROMPTS))


def test_load_bundle_names_what_is_missing(bundle, bundle_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such model directory"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown components"):
        load_bundle(bundle_dir, require=("unet", "scheduler"))
    no_vae = _copy_without(bundle_dir, tmp_path / "a", "vae")
    with pytest.raises(FileNotFoundError, match=f"{no_vae}: no vae/ \\(required"):
        load_bundle(no_vae)
    # The IP-Adapter U-Net needs the image encoder for sampling; the probe's require does not.
    no_image = _copy_without(bundle_dir, tmp_path / "b", "image_encoder")
    with pytest.raises(FileNotFoundError, match="no image_encoder/ .*use_ip_adapter"):
        load_bundle(no_image)
    assert load_bundle(no_image, require=("unet", "vae")).image_encoder is None
    no_text = _copy_without(bundle_dir, tmp_path / "c", "text_encoder", "image_encoder")
    with pytest.raises(FileNotFoundError, match="no text_encoder/ .*go together"):
        load_bundle(no_text, require=("unet", "vae"))
    shutil.rmtree(os.path.join(no_text, "tokenizer"))
    minimal = load_bundle(no_text, require=("unet", "vae"))
    assert minimal.text_encoder is None and minimal.tokenizer is None
    # A text encoder of the wrong width is refused, naming both sizes.
    wrong_config = dataclasses.replace(CLIPTextConfig.tiny(), hidden_size=16)
    wrong = random_model(lambda rngs: CLIPTextModel(wrong_config, rngs=rngs), 4)
    save(wrong, os.path.join(no_image, "text_encoder"))
    with pytest.raises(ValueError, match="tokens of 16, unet/ has cross_attention_dim 32"):
        load_bundle(no_image, require=("unet", "vae"))


def _config(bundle_dir: str, out, **overrides):
    config = get_config("sample")
    config.update(checkpoint=bundle_dir, object=sample.BUILTIN, prompt=PROMPTS[0],
                  out=str(out), views=V, frames=F, size=SIZE, steps=STEPS,
                  tile_capacity=4096)
    config.update(**overrides)
    return config


@pytest.fixture(scope="module")
def videos(bundle_dir, tmp_path_factory) -> dict[str, np.ndarray]:
    """Decoded videos of three runs: seed 0 with per_view, seed 0 again, seed 1."""
    out = tmp_path_factory.mktemp("sample")
    runs = {"first": dict(seed=0, per_view=True, clip=str(out / "clip")),
            "again": dict(seed=0), "other": dict(seed=1)}
    decoded = {}
    for name, overrides in runs.items():
        paths = sample.run(_config(bundle_dir, out / f"{name}.mp4", **overrides))
        assert paths[0] == str(out / f"{name}.mp4")
        decoded[name] = read_video(out / f"{name}.mp4")
    for k, path in enumerate(sample.view_paths(str(out / "first.mp4"), V)):
        decoded[f"view{k}"] = read_video(path)
    assert sorted(os.listdir(out)) == sorted(
        ["first.mp4", "again.mp4", "other.mp4", "clip"]
        + [f"first_view{k}.mp4" for k in range(V)])
    decoded["clip"] = load_clip(str(out / "clip"))
    return decoded


def test_sample_writes_the_views_side_by_side(videos):
    tiled = videos["first"]
    assert tiled.shape == (F, SIZE, V * SIZE, 3)
    assert tiled.std() > 1.0
    for k in range(V):
        view = videos[f"view{k}"]
        assert view.shape == (F, SIZE, SIZE, 3)
        tile = tiled[:, :, k * SIZE:(k + 1) * SIZE].astype(np.float32)
        assert np.abs(view.astype(np.float32) - tile).mean() < 4.0, k   # codec loss only


def test_sample_writes_a_clip_folder_for_stage_two(videos):
    """`config.clip`: the per-view videos, the condition cameras and masks, the prompt
    and the static asset, as `reconstruction.clips.load_clip` reads them."""
    clip = videos["clip"]
    assert clip.num_views == V and clip.num_frames == F and clip.size == (SIZE, SIZE)
    assert clip.prompt == PROMPTS[0]
    for k in range(V):
        np.testing.assert_array_equal(clip.videos[k], videos[f"view{k}"])
    views = ring_views(V, elevation=15.0, size=SIZE)
    np.testing.assert_allclose(clip.viewmats, views.viewmats, atol=1e-5)
    np.testing.assert_allclose(clip.Ks, views.Ks, atol=1e-5)
    builtin = builtin_object(0)
    np.testing.assert_array_equal(clip.canonical.means, builtin.means)
    condition = ViewRenderer(SIZE, SIZE, tile_capacity=4096)(builtin, views.viewmats,
                                                             views.Ks)
    np.testing.assert_array_equal(clip.masks[:, 0], condition.alphas > 0.5)


def test_sample_is_deterministic_for_a_seed(videos):
    np.testing.assert_array_equal(videos["again"], videos["first"])
    assert np.abs(videos["other"].astype(np.float32) - videos["first"]).mean() > 1.0


def test_tile_views_orders_views_left_to_right():
    video = np.arange(2 * 3 * 4 * 5 * 3).reshape(2, 3, 4, 5, 3)
    tiled = sampling.tile_views(video)
    assert tiled.shape == (3, 4, 10, 3)
    np.testing.assert_array_equal(tiled[:, :, 5:], video[1])


def test_sample_errors_name_the_problem(bundle_dir, tmp_path):
    def error(config) -> str:
        with pytest.raises((ValueError, OSError)) as info:
            sample.run(config)
        return str(info.value)

    out = tmp_path / "x.mp4"
    missing = str(tmp_path / "missing")
    assert missing in error(_config(missing, out))
    nothing = str(tmp_path / "nothing.ply")
    assert f"{nothing}: no such file" in error(_config(bundle_dir, out, object=nothing))
    assert ("config.size=30 must be a multiple of 4 (VAE downsampling 2 x U-Net "
            "downsampling 2)" in error(_config(bundle_dir, out, size=30)))
    assert "config.out" in error(_config(bundle_dir, tmp_path / "x.avi"))
    assert "config.frames=1 must be >= 2" in error(_config(bundle_dir, out, frames=1))
    assert "config.prompt is required" in error(_config(bundle_dir, out, prompt=None))
    assert not os.listdir(tmp_path)


def test_sample_defaults_come_from_the_bundle(bundle, tmp_path):
    """Unset views / frames / size / steps / guidance: the bundle's sampling.json, else
    the config's paper defaults."""
    trained = str(tmp_path / "trained")
    save_bundle(dataclasses.replace(bundle, sampling=SamplingDefaults(
        image_size=16, num_views=2, num_frames=3, num_steps=1, guidance_scale=2.0)), trained)
    assert load_bundle(trained).sampling.image_size == 16
    config = get_config("sample")
    config.update(checkpoint=trained, prompt="a cat")
    resolved = sampling.resolve(config, load_bundle(trained))
    assert (resolved.size, resolved.views, resolved.frames, resolved.steps,
            resolved.guidance) == (16, 2, 3, 1, 2.0)
    config.size = 32
    assert sampling.resolve(config, load_bundle(trained)).size == 32
    converted = sampling.resolve(get_config("sample"), bundle)     # no sampling defaults
    assert (converted.size, converted.views, converted.frames, converted.steps,
            converted.guidance) == (256, 4, 16, 25, 7.5)
    paths = sample.run(_config(trained, tmp_path / "out" / "d.gif", views=None, frames=None,
                               size=None, steps=None, tile_capacity=1024))
    assert read_video(paths[0]).shape == (3, 16, 2 * 16, 3)


def test_sample_command_line_reports_errors(tmp_path):
    """`python -m t4a_jax.sample --config.x=...` as a user types it: a missing model
    directory is `error: ...` naming it, exit status 1."""
    missing = str(tmp_path / "missing")
    result = subprocess.run(
        [sys.executable, "-m", "t4a_jax.sample", f"--config.checkpoint={missing}",
         "--config.prompt=a cat", f"--config.out={tmp_path / 'x.mp4'}"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert f"error: {missing}: no such model directory" in result.stderr
