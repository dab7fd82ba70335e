"""sample_multiview_video on tiny random models: shapes, seeding, the condition frame, the
inputs of the sampling loop (prompt vs empty prompt, IP-Adapter embeddings of the renders
vs zeros, cameras in both branches) against the public parts computed directly, one
compilation for several runs; render_condition_views."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t4a_jax import render
from t4a_jax import pipeline
from t4a_jax.pipeline import render_condition_views, sample_multiview_video
from t4a_jax.models.clip import preprocess_images
from t4a_jax.models.tokenizer import CLIPTokenizer, bytes_to_unicode
from t4a_jax.models.unet import UNet
from tiny_models import tiny_mvvdm_models

B, V, F, SIZE, STEPS = 2, 2, 3, 16, 3
PROMPTS = ["a dog is running", "a cat jumps"]


def _tokenizer() -> CLIPTokenizer:
    """The byte alphabet with and without `</w>`, no merges: one id per character."""
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer({t: i for i, t in enumerate(tokens)}, [], max_length=16)


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    """A two-level MV-VDM U-Net with every part on (cameras, multi-view attention, I2V,
    IP-Adapter, spatio-temporal motion modules), the tiny VAE and CLIP towers."""
    return tiny_mvvdm_models(_tokenizer())


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, jax.Array]:
    images = np.random.default_rng(0).uniform(0, 1, (B, V, SIZE, SIZE, 3)).astype(np.float32)
    c2w = render.orbit_c2w(15.0, jnp.array([[0.0, 180.0], [45.0, 225.0]]))
    return images, render.camera_vector(c2w)


def _run(models, inputs, **kwargs) -> jax.Array:
    images, cameras = inputs
    settings = {"num_frames": F, "num_steps": STEPS, "seed": 0, **kwargs}
    return sample_multiview_video(models["unet"], models["vae"], models["text_encoder"],
                                  models["tokenizer"], images, cameras, PROMPTS,
                                  image_encoder=models["image_encoder"], **settings)


@pytest.fixture(scope="module")
def runs(models, inputs) -> dict[str, Any]:
    """Three runs (seeds 0, 0, 1) of one compiled program and one without guidance,
    recording the U-Net's traces and, through a callback, what the pipeline hands to
    `sample_ddim`."""
    traces, recorded = [], []
    real_call, real_sample = UNet.__call__, pipeline.sample_ddim

    def counting_call(self, sample, *args, **kwargs):
        traces.append(sample.shape)
        return real_call(self, sample, *args, **kwargs)

    def recording_sample(denoise_fn, schedule, latents, cond, uncond=None, **kwargs):
        out = real_sample(denoise_fn, schedule, latents, cond, uncond, **kwargs)
        jax.debug.callback(lambda *values: recorded.append(values), latents, cond, uncond,
                           kwargs["condition_latent"], kwargs["guidance_scale"], out)
        return out

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(UNet, "__call__", counting_call)
        patch.setattr(pipeline, "sample_ddim", recording_sample)
        videos = [np.asarray(_run(models, inputs, seed=seed)) for seed in (0, 0, 1)]
        videos.append(np.asarray(_run(models, inputs, guidance_scale=1.0)))
    return dict(videos=videos, traces=traces, recorded=recorded)


def test_video_shape_and_seed(runs):
    video, again, other, _ = runs["videos"]
    assert video.shape == (B, V, F, SIZE, SIZE, 3) and video.dtype == np.float32
    assert video.min() >= 0 and video.max() <= 1 and video.std() > 0.01
    np.testing.assert_array_equal(video, again)
    assert not np.allclose(video[:, :, 1:], other[:, :, 1:], atol=1e-3)


def test_one_compilation_and_one_unet_trace(runs):
    """Three runs, 3 DDIM steps each, guidance on: the U-Net is traced once, on [x; x];
    guidance 1 is another program, one U-Net call on x without an unconditional branch."""
    latent = (F, SIZE // 2, SIZE // 2, 4)
    assert runs["traces"] == [(2 * B * V,) + latent, (B * V,) + latent]
    assert runs["recorded"][-1][2] is None
    unguided, guided = runs["videos"][3], runs["videos"][0]
    np.testing.assert_array_equal(unguided[:, :, 0], guided[:, :, 0])
    assert not np.allclose(unguided[:, :, 1:], guided[:, :, 1:], atol=1e-3)


def test_sampler_inputs_follow_design(models, runs, inputs):
    """Prompt tokens vs the empty prompt's, IP-Adapter embeddings of the renders vs zeros,
    cameras in both branches, guidance 7.5; the condition latent is the VAE sample of the
    renders with the seed's second key, the noise from its first; the video decodes the
    sampler's output, frame 0 the condition latent."""
    latents, cond, uncond, condition, guidance, out = runs["recorded"][0]
    images = jnp.asarray(inputs[0]).reshape(B * V, SIZE, SIZE, 3)
    ids = jnp.asarray(models["tokenizer"](PROMPTS + [""]))
    names = ("text_encoder", "image_encoder", "vae")
    graphdefs, states = zip(*(nnx.split(models[name]) for name in names))

    @jax.jit
    def expected_values(states, images, ids, out):
        text_encoder, image_encoder, vae = (nnx.merge(g, s) for g, s in zip(graphdefs, states))
        noise_key, condition_key, _ = jax.random.split(jax.random.key(0), 3)
        decoded = vae.decode(out.reshape(-1, *out.shape[2:]))
        return dict(tokens=text_encoder(ids),
                    embeds=image_encoder(preprocess_images(images, 16)),
                    condition=vae.sample_latents(2 * images - 1, condition_key),
                    noise=jax.random.normal(noise_key, latents.shape),
                    video=jnp.clip((decoded + 1) / 2, 0, 1).reshape(B, V, F, SIZE, SIZE, 3))

    expected = expected_values(states, images, ids, out)
    tokens, cameras = expected["tokens"], np.asarray(inputs[1]).reshape(B * V, 16)
    close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    close(cond["text"], jnp.repeat(tokens[:B], V, axis=0))
    close(uncond["text"], jnp.repeat(tokens[B:], B * V, axis=0))
    close(cond["image"], expected["embeds"])
    np.testing.assert_array_equal(uncond["image"], np.zeros_like(cond["image"]))
    close(cond["cameras"], cameras)
    close(uncond["cameras"], cameras)
    assert float(guidance) == 7.5
    close(condition, expected["condition"])
    close(latents, expected["noise"])
    np.testing.assert_array_equal(out[:, 0], condition)
    close(runs["videos"][0], expected["video"])


def test_errors_name_the_bad_input(models, inputs):
    images, cameras = inputs
    args = (models["unet"], models["vae"], models["text_encoder"], models["tokenizer"])
    encoder = models["image_encoder"]
    with pytest.raises(ValueError, match="use_ip_adapter=True, so image_encoder is required"):
        sample_multiview_video(*args, images, cameras, PROMPTS)
    with pytest.raises(ValueError, match="1 prompts for 2 objects"):
        sample_multiview_video(*args, images, cameras, PROMPTS[:1], image_encoder=encoder)
    with pytest.raises(ValueError, match="image size 14x14 must be a multiple of 4"):
        sample_multiview_video(*args, images[:, :, :14, :14], cameras, PROMPTS,
                               image_encoder=encoder)
    with pytest.raises(ValueError, match=r"cameras must be \[2, 2, 16\]"):
        sample_multiview_video(*args, images, cameras[:, :1], PROMPTS, image_encoder=encoder)
    with pytest.raises(ValueError, match="use_camera_embedding=True, so cameras must be"):
        sample_multiview_video(*args, images, None, PROMPTS, image_encoder=encoder)
    with pytest.raises(ValueError, match="num_frames=1"):
        sample_multiview_video(*args, images, cameras, PROMPTS, image_encoder=encoder,
                               num_frames=1)
    with pytest.raises(TypeError, match="single string"):
        sample_multiview_video(*args, images, cameras, PROMPTS[0], image_encoder=encoder)


def test_render_condition_views():
    """Four views 90 degrees apart on the Animate3D orbit: the U-Net cameras are those of
    `render.orbit_c2w` at distance 3, a grey background fills the pixels no Gaussian
    covers, and an overflowing tile raises."""
    gaussians = render.Gaussians(
        means=jnp.array([[0.0, 0.0, 0.0], [0.3, 0.0, 0.2]]),
        quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (2, 1)),
        log_scales=jnp.full((2, 3), np.log(0.2), jnp.float32),
        opacity_logits=jnp.full((2,), 3.0),
        sh=render.sh_from_rgb(jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])))
    images, cameras = render_condition_views(gaussians, size=16)
    assert images.shape == (4, 16, 16, 3)
    expected = render.camera_vector(render.orbit_c2w(15.0, jnp.array([0.0, 90, 180, 270]),
                                                     3.0))
    np.testing.assert_allclose(np.asarray(cameras), np.asarray(expected), atol=1e-6)
    np.testing.assert_allclose(np.asarray(images[:, 0, 0]), 0.498, atol=1e-3)
    assert float(jnp.abs(images[:, 8, 8] - 0.498).max()) > 0.1

    crowd = render.Gaussians(
        means=jnp.zeros((40, 3)), quats=jnp.tile(jnp.array([1.0, 0, 0, 0]), (40, 1)),
        log_scales=jnp.full((40, 3), np.log(0.2), jnp.float32),
        opacity_logits=jnp.full((40,), -3.0), sh=render.sh_from_rgb(jnp.ones((40, 3))))
    with pytest.raises(ValueError, match="tile_capacity=32 is too small; 40 would suffice"):
        render_condition_views(crowd, size=16, tile_capacity=32, overflow="raise")
    grown, _ = render_condition_views(crowd, size=16, tile_capacity=32)    # overflow="grow"
    ample, _ = render_condition_views(crowd, size=16, tile_capacity=64)
    np.testing.assert_allclose(np.asarray(grown), np.asarray(ample), atol=1e-6)
