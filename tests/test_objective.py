"""Stage One's objective (`t4a_jax.training.objective`): the diffusion term recomputed
from what the U-Net was given (a recording stand-in for the U-Net), the condition frame
per Eq. 2, shared timesteps per object, the weighting, and on a small real MV-VDM:
gradients only for the trainable parameters, finite, and jit."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from t4a_jax.config_files import get_config
from t4a_jax.diffusion import ConditionNoiseConfig, make_schedule
from t4a_jax.models.unet import UNet, UNetConfig, is_trainable, trainable_filter
from t4a_jax.training.objective import (DEFAULT_TAP, StageOneBatch, StageOneLossConfig,
                                        stage_one_loss)

REPO = pathlib.Path(__file__).resolve().parents[1]
B, V, F, H, W = 2, 2, 4, 8, 8
IMAGE = (64, 64)
N = 9


class RecordingUNet:
    """Stands in for the U-Net: records its inputs, predicts 0.5 * z_t and returns
    features that are constant along the tracks (so the tracking terms vanish)."""

    def __init__(self, features):
        self.features = features
        self.calls = []

    def __call__(self, z_t, t, text, *, cameras, image_embeds, num_views, capture):
        self.calls.append(dict(z_t=z_t, t=t, num_views=num_views, capture=capture))
        return 0.5 * z_t, {capture[0]: self.features}


def _batch(rng, tracks=None):
    latents = rng.normal(size=(B * V, F, H, W, 4)).astype(np.float32)
    if tracks is None:
        tracks = np.broadcast_to(rng.uniform(8, 56, size=(B, V, 1, N, 2)), (B, V, F, N, 2))
    return StageOneBatch(latents=jnp.asarray(latents),
                         text_states=jnp.zeros((B * V, 5, 32)),
                         cameras=jnp.zeros((B * V, 16)),
                         tracks=jnp.asarray(tracks, jnp.float32),
                         visibility=jnp.ones((B, V, F, N), bool),
                         query_valid=jnp.ones((B, V, N), bool))


def _static_features(rng):
    """[B*V, F, 4, 4, 8]: the same random map in every frame (tracks are static)."""
    base = rng.normal(size=(B * V, 1, 4, 4, 8)).astype(np.float32)
    return jnp.asarray(np.broadcast_to(base, (B * V, F, 4, 4, 8)))


@pytest.mark.parametrize("mode", ["off", "sigma"])
def test_diffusion_term_and_condition_frame(mode):
    rng = np.random.default_rng(0)
    schedule = make_schedule()
    batch = _batch(rng)
    unet = RecordingUNet(_static_features(rng))
    config = StageOneLossConfig(condition_noise=ConditionNoiseConfig(mode=mode, scale=0.5))
    loss, parts = stage_one_loss(unet, batch, schedule, jax.random.key(3), config, IMAGE)
    call = unet.calls[0]
    z_t, t = np.asarray(call["z_t"]), np.asarray(call["t"])
    assert call["num_views"] == V and call["capture"] == (DEFAULT_TAP,)
    assert (t.reshape(B, V) == t.reshape(B, V)[:, :1]).all(), t      # one t per object
    abar = np.asarray(schedule.alphas_cumprod, np.float64)[t][:, None, None, None, None]
    z0 = np.asarray(batch.latents, np.float64)
    # Recover the noise the forward process used on frames 2..F, then Eq. 3 by hand.
    eps = (z_t[:, 1:] - np.sqrt(abar) * z0[:, 1:]) / np.sqrt(1 - abar)
    expected = np.mean((0.5 * z_t[:, 1:] - eps) ** 2)
    np.testing.assert_allclose(float(parts["diffusion"]), expected, rtol=1e-4)
    assert abs(eps.std() - 1) < 0.1
    # Eq. 2 on frame 1: untouched when off; else noise of level 0.5 sqrt(1 - abar_t).
    offset = z_t[:, 0] - z0[:, 0]
    if mode == "off":
        np.testing.assert_array_equal(offset, 0)
    else:
        level = offset.reshape(B * V, -1).std(axis=1) / (0.5 * np.sqrt(1 - abar.ravel()))
        np.testing.assert_allclose(level, 1.0, atol=0.35)
    # Static features along static tracks: both tracking terms vanish.
    assert float(parts["correspondence"]) < 1e-6
    np.testing.assert_allclose(float(loss), float(parts["diffusion"])
                               + 10.0 * float(parts["position"]), rtol=1e-5)
    assert int(parts["tracked_points"]) == B * V * 8


def test_weights_combine_the_parts():
    rng = np.random.default_rng(1)
    batch = _batch(rng, tracks=rng.uniform(8, 56, size=(B, V, F, N, 2)))
    unet = RecordingUNet(jnp.asarray(rng.normal(size=(B * V, F, 4, 4, 8)), jnp.float32))
    config = StageOneLossConfig(diffusion_weight=0.3, correspondence_weight=2.0,
                                position_weight=5.0)
    loss, parts = stage_one_loss(unet, batch, make_schedule(), jax.random.key(0), config,
                                 IMAGE)
    assert float(parts["correspondence"]) > 0.1 and float(parts["position"]) > 0.0
    np.testing.assert_allclose(float(loss), 0.3 * float(parts["diffusion"])
                               + 2.0 * float(parts["correspondence"])
                               + 5.0 * float(parts["position"]), rtol=1e-6)


def test_config_from_dict_rejects_unknown_fields():
    config = StageOneLossConfig.from_config_dict(
        {"position_weight": 3.0, "condition_noise": {"mode": "off"}})
    assert config.position_weight == 3.0 and config.condition_noise.mode == "off"
    with pytest.raises(ValueError, match="unknown fields.*'lamda'"):
        StageOneLossConfig.from_config_dict({"lamda": 1.0})


def _small_mvvdm() -> UNet:
    config = dataclasses.replace(
        UNetConfig.from_config_dict(get_config("unet", "tiny_mvvdm")),
        block_out_channels=(16, 32), use_ip_adapter=False,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    unet = UNet(config, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(5)       # every parameter non-zero, so all carry gradient
    nnx.update(unet, jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.1,
                                                        x.dtype), nnx.state(unet, nnx.Param)))
    return unet


def stage_one_grads(unet: UNet, batch: StageOneBatch, schedule, key, config, image_size):
    """((L, parts), grads) as the training step differentiates: with respect to the
    trainable split of the U-Net (`trainable_filter`) only, the rest held constant."""
    graph, params, frozen = nnx.split(unet, trainable_filter, ...)

    def loss(params):
        return stage_one_loss(nnx.merge(graph, params, frozen), batch, schedule, key,
                              config, image_size)

    return jax.value_and_grad(loss, has_aux=True)(params)


def test_gradients_reach_only_trainable_parameters_and_are_finite():
    unet = _small_mvvdm()
    rng = np.random.default_rng(2)
    batch = _batch(rng, tracks=rng.uniform(8, 56, size=(B, V, F, N, 2)))
    grads_fn = nnx.jit(stage_one_grads, static_argnums=(4, 5))
    (loss, parts), grads = grads_fn(unet, batch, make_schedule(), jax.random.key(0),
                                    StageOneLossConfig(), IMAGE)
    assert np.isfinite(float(loss)) and all(np.isfinite(float(p)) for p in parts.values())
    flat = nnx.to_flat_state(grads)
    trainable = [p for p, _ in nnx.to_flat_state(nnx.state(unet, nnx.Param))
                 if is_trainable(p)]
    assert sorted(p for p, _ in flat) == sorted(trainable) and len(trainable) > 0
    norms = {p: float(jnp.linalg.norm(g.get_value())) for p, g in flat}
    assert all(np.isfinite(x) for x in norms.values())
    for kind in ("motion_modules", "to_q_i2v", "to_out_i2v"):
        assert any(norm > 0 for p, norm in norms.items() if kind in map(str, p)), kind
