"""Logical axes on parameters and their placement on a mesh (`t4a_jax.sharding`): the
rule resolution on hand-made cases, annotations covering every parameter of every model,
and, on 8 fake CPU devices, a sharded MV-VDM whose forward pass and gradients equal the
single-device ones, and a checkpoint read straight into its shards."""

from __future__ import annotations

import pathlib

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from multidevice import run_on_devices
from t4a_jax import sharding
from t4a_jax.config_files import get_config
from t4a_jax.models import abstract_model
from t4a_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                                 CLIPVisionModelWithProjection)
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import UNetConfig
from t4a_jax.models.vae import AutoencoderKL, VAEConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
MESH = {"data": 2, "fsdp": 4}


def _unet_config(variant: str) -> UNetConfig:
    return UNetConfig.from_config_dict(get_config("unet", variant))


@pytest.mark.parametrize("axes, shape, expected", [
    (("in_channels", "out_channels"), (320, 1280), P(None, "fsdp")),
    # Output channels that do not divide by 4 fall back to the input channels ...
    (("in_channels", "out_channels"), (1280, 6), P("fsdp", None)),
    # ... and to replication when neither divides.
    ((None, None, "in_channels", "out_channels"), (3, 3, 6, 3), P(None, None, None, None)),
    (("out_channels",), (1280,), P("fsdp")),
    (("norm",), (1280,), P(None)),
    (("vocab", "out_channels"), (49408, 6), P("fsdp", None)),
    ((None,), (7,), P(None)),
])
def test_fsdp_rules(axes, shape, expected):
    assert sharding.partition_spec(axes, shape, MESH) == expected


def test_rules_use_each_mesh_axis_once_and_accept_axis_tuples():
    rules = (("out_channels", ("data", "fsdp")), ("in_channels", "fsdp"),
             ("in_channels", "data"))
    # out takes both axes (size 8), so in gets nothing.
    assert sharding.partition_spec(("in_channels", "out_channels"), (16, 64), MESH,
                                   rules) == P(None, ("data", "fsdp"))
    # out does not divide by 8: in takes fsdp first, then data is still free for nothing.
    assert sharding.partition_spec(("in_channels", "out_channels"), (16, 12), MESH,
                                   rules) == P("fsdp", None)
    assert sharding.partition_spec(("in_channels", "out_channels"), (16, 12), MESH,
                                   sharding.REPLICATED_RULES) == P(None, None)


def test_rule_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"'tensor'.*does not have"):
        sharding.partition_spec(("out_channels",), (8,), MESH, (("out_channels", "tensor"),))
    with pytest.raises(ValueError, match="do not match shape"):
        sharding.partition_spec(("out_channels",), (8, 8), MESH)
    with pytest.raises(ValueError, match="parameter (bias|kernel) .* has no 'logical_axes'"):
        sharding.partition_specs(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), sharding.make_mesh())


def test_make_mesh_sizes():
    mesh = sharding.make_mesh()
    assert dict(mesh.shape) == {"data": jax.device_count(), "fsdp": 1}
    assert dict(sharding.make_mesh(data=1, fsdp=-1).shape) == {"data": 1,
                                                               "fsdp": jax.device_count()}
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="need 2 devices"):
        sharding.make_mesh(data=1, fsdp=2, devices=jax.devices()[:1])


_EXPECTED_AXES = {
    nnx.Linear: {"kernel": ("in_channels", "out_channels"), "bias": ("out_channels",)},
    nnx.Conv: {"kernel": (None, None, "in_channels", "out_channels"),
               "bias": ("out_channels",)},
    nnx.Embed: {"embedding": ("vocab", "out_channels")},
    nnx.GroupNorm: {"scale": ("norm",), "bias": ("norm",)},
    nnx.LayerNorm: {"scale": ("norm",), "bias": ("norm",)},
}


@pytest.mark.parametrize("name, build", [
    ("unet", lambda rngs: UNet(_unet_config("tiny_mvvdm"), rngs=rngs)),
    ("vae", lambda rngs: AutoencoderKL(VAEConfig.tiny(), rngs=rngs)),
    ("clip_text", lambda rngs: CLIPTextModel(
        CLIPTextConfig(vocab_size=50, hidden_size=8, intermediate_size=16,
                       num_hidden_layers=1, num_attention_heads=2,
                       max_position_embeddings=7), rngs=rngs)),
    ("clip_vision", lambda rngs: CLIPVisionModelWithProjection(
        CLIPVisionConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=2, image_size=8, patch_size=4,
                         projection_dim=6), rngs=rngs)),
])
def test_every_parameter_is_annotated_by_its_layer(name, build):
    model = abstract_model(build)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(params) > 0
    for path, param in params:
        axes = param.get_metadata(sharding.LOGICAL_AXES)
        assert len(axes) == len(param.shape), (name, path, axes, param.shape)
    checked = 0
    for path, node in nnx.iter_graph(model):
        layer = next((cls for cls in _EXPECTED_AXES if isinstance(node, cls)), None)
        for attr, expected in _EXPECTED_AXES.get(layer, {}).items():
            param = getattr(node, attr, None)
            if param is not None:
                assert param.get_metadata(sharding.LOGICAL_AXES) == expected, (path, attr)
                checked += 1
    assert checked > 0.9 * len(params), (checked, len(params))


def test_sharded_mvvdm_equals_single_device_and_loads_sharded(tmp_path):
    """On a (data 2, fsdp 4) mesh: every parameter with an axis divisible by 4 is split
    in 4 (so no device holds it whole), the jitted forward pass and the gradients of a
    loss equal the unsharded ones, and `load(mesh=...)` restores into the same shards."""
    out = run_on_devices(f"""
        import dataclasses
        import importlib.util
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        from jax.sharding import NamedSharding, PartitionSpec as P
        from t4a_jax import sharding
        from t4a_jax.models import load, save
        from t4a_jax.models.unet import UNet
        from t4a_jax.models.unet_config import UNetConfig

        assert jax.device_count() == 8
        from t4a_jax.config_files import get_config
        config = dataclasses.replace(
            UNetConfig.from_config_dict(get_config("unet", "tiny_mvvdm")),
            block_out_channels=(16, 32),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        unet = UNet(config, rngs=nnx.Rngs(0))
        # Non-zero everywhere, so that zero-initialised layers carry signal too.
        rng = np.random.default_rng(1)
        nnx.update(unet, jax.tree.map(
            lambda x: jnp.asarray(rng.normal(size=x.shape) * 0.2, x.dtype),
            nnx.state(unet, nnx.Param)))
        rng = np.random.default_rng(0)
        n, v, f = 4, 2, 3
        sample = rng.normal(size=(n, f, 8, 8, 4)).astype(np.float32)
        timesteps = np.array([10, 500, 999, 250])
        context = rng.normal(size=(n, 5, 32)).astype(np.float32)
        cameras = rng.normal(size=(n, 16)).astype(np.float32)
        images = rng.normal(size=(n, 24)).astype(np.float32)

        def loss(model, sample):
            eps = model(sample, timesteps, context, cameras=cameras, image_embeds=images,
                        num_views=v)
            return jnp.mean(eps ** 2), eps

        step = nnx.jit(nnx.value_and_grad(loss, has_aux=True))
        (ref_loss, ref_eps), ref_grads = step(unet, jnp.asarray(sample))
        ref_grads = jax.tree.map(np.asarray, ref_grads)
        save(unet, "{tmp_path}/unet")

        mesh = sharding.make_mesh(data=2, fsdp=4)
        sharding.shard_module(unet, mesh)
        split = 0
        for path, param in nnx.to_flat_state(nnx.state(unet, nnx.Param)):
            value = param.get_value()
            axes = param.get_metadata("logical_axes")
            shard = value.addressable_shards[0].data.shape
            divisible = [d for d, (a, s) in enumerate(zip(axes, value.shape))
                         if a in ("out_channels", "in_channels", "vocab") and s % 4 == 0]
            if divisible:
                assert np.prod(shard) * 4 == np.prod(value.shape), (path, shard, value.shape)
                split += 1
            else:
                assert shard == value.shape, (path, shard)
        batch = jax.device_put(sample, NamedSharding(mesh, P("data")))
        (loss_value, eps), grads = step(unet, batch)
        assert eps.sharding.spec[0] == "data" or eps.sharding.is_equivalent_to(
            NamedSharding(mesh, P("data")), eps.ndim), eps.sharding
        np.testing.assert_allclose(np.asarray(eps), np.asarray(ref_eps), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(float(loss_value), float(ref_loss), rtol=1e-5)
        worst = 0.0
        for (path, g), (_, r) in zip(nnx.to_flat_state(grads), nnx.to_flat_state(ref_grads)):
            g, r = np.asarray(g.get_value()), np.asarray(r.get_value())
            scale = np.abs(r).max() + 1e-6
            worst = max(worst, float(np.abs(g - r).max() / scale))
        assert worst < 1e-3, worst     # float32 sums in another order on 8 shards

        restored = load("{tmp_path}/unet", mesh=mesh)
        for (path, a), (_, b) in zip(nnx.to_flat_state(nnx.state(restored, nnx.Param)),
                                     nnx.to_flat_state(nnx.state(unet, nnx.Param))):
            a, b = a.get_value(), b.get_value()
            assert a.sharding.is_equivalent_to(b.sharding, a.ndim), (path, a.sharding)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        print("split", split, "of", len(nnx.to_flat_state(nnx.state(unet, nnx.Param))))
        print("worst relative gradient error", worst)
    """)
    split, total = map(int, out.split("split ")[1].split()[::2][:2])
    assert split > 0.5 * total, out
