"""`t4a_jax.models.layers` (Linear, GroupNorm, LayerNorm with their own backward passes)
against torch.nn's modules in float64: outputs and the gradients of x and of every
parameter; and the same parameters as flax.nnx's layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

from t4a_jax.models.layers import (  # noqa: E402
    GroupNorm, LayerNorm, Linear, column_sum, gelu, token_sum)


def _torch_grads(module, x, cotangent, channels_first):
    """Output and gradients (x, then parameters by name) of torch `module` at x."""
    t_x = torch.tensor(x, requires_grad=True)
    t_in = t_x.movedim(-1, 1) if channels_first else t_x
    out = module(t_in)
    out = out.movedim(1, -1) if channels_first else out
    (out * torch.tensor(cotangent)).sum().backward()
    return (out.detach().numpy(), t_x.grad.numpy(),
            {name: p.grad.numpy() for name, p in module.named_parameters()})


def _jax_grads(module, x, cotangent):
    graphdef, params = nnx.split(module, nnx.Param)
    loss = lambda params, x: jnp.sum(nnx.merge(graphdef, params)(x) * cotangent)
    out = nnx.merge(graphdef, params)(jnp.asarray(x))
    d_params, d_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
    return np.asarray(out), np.asarray(d_x), d_params


def _randomize(module, rng):
    for path, param in nnx.iter_graph(module):
        if isinstance(param, nnx.Param):
            param[...] = jnp.asarray(rng.normal(size=param.shape) + 1.0, param.dtype)


def _check(jax_result, torch_result, names):
    out, d_x, d_params = jax_result
    t_out, t_d_x, t_d_params = torch_result
    np.testing.assert_allclose(out, t_out, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(d_x, t_d_x, rtol=1e-9, atol=1e-9)
    for ours, theirs in names.items():
        np.testing.assert_allclose(np.asarray(d_params[ours][...]), t_d_params[theirs],
                                   rtol=1e-9, atol=1e-9, err_msg=ours)


def _check_norm(ours, theirs, x, cotangent, rng, channels_first):
    """Random float64 scale and bias in both norms, then `_check` (call under x64)."""
    _randomize(ours, rng)
    theirs = theirs.double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(np.asarray(ours.scale[...])))
        theirs.bias.copy_(torch.tensor(np.asarray(ours.bias[...])))
    _check(_jax_grads(ours, x, cotangent),
           _torch_grads(theirs, x, cotangent, channels_first=channels_first),
           {"scale": "weight", "bias": "bias"})


@pytest.mark.parametrize("shape, groups", [((3, 5, 6, 8), 4), ((2, 3, 4, 5, 12), 3),
                                           ((4, 7, 6), 1)])
def test_group_norm_matches_torch_in_float64(shape, groups):
    rng = np.random.default_rng(len(shape) + groups)
    x = rng.normal(size=shape) * 3 + 2
    cotangent = rng.normal(size=shape)
    channels = shape[-1]
    with jax.enable_x64(True):
        ours = GroupNorm(channels, num_groups=groups, epsilon=1e-5, dtype=jnp.float64,
                         param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        _check_norm(ours, torch.nn.GroupNorm(groups, channels, eps=1e-5), x, cotangent,
                    rng, channels_first=True)


def test_layer_norm_matches_torch_in_float64():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 5, 7, 16)) * 2 - 1
    cotangent = rng.normal(size=x.shape)
    with jax.enable_x64(True):
        ours = LayerNorm(16, epsilon=1e-6, dtype=jnp.float64, param_dtype=jnp.float64,
                         rngs=nnx.Rngs(0))
        _check_norm(ours, torch.nn.LayerNorm(16, eps=1e-6), x, cotangent, rng,
                    channels_first=False)


def test_linear_matches_torch_in_float64():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4, 6))
    cotangent = rng.normal(size=(2, 3, 4, 5))
    with jax.enable_x64(True):
        ours = Linear(6, 5, dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        _randomize(ours, rng)
        theirs = torch.nn.Linear(6, 5).double()
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(np.asarray(ours.kernel[...]).T))
            theirs.bias.copy_(torch.tensor(np.asarray(ours.bias[...])))
        out, d_x, d_params = _jax_grads(ours, x, cotangent)
        t_out, t_d_x, t_grads = _torch_grads(theirs, x, cotangent, channels_first=False)
    np.testing.assert_allclose(out, t_out, rtol=1e-10)
    np.testing.assert_allclose(d_x, t_d_x, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(d_params["kernel"][...]), t_grads["weight"].T,
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(d_params["bias"][...]), t_grads["bias"], rtol=1e-10)


def test_same_parameters_and_forward_as_flax_layers():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)).astype(np.float32))
    pairs = ((Linear, nnx.Linear, (8, 6), {}),
             (GroupNorm, nnx.GroupNorm, (8,), {"num_groups": 2}),
             (LayerNorm, nnx.LayerNorm, (8,), {}))
    for ours_class, flax_class, args, kwargs in pairs:
        ours = ours_class(*args, **kwargs, rngs=nnx.Rngs(1))
        flax_layer = flax_class(*args, **kwargs, rngs=nnx.Rngs(1))
        _randomize(ours, rng)
        ours_state, flax_state = nnx.state(ours, nnx.Param), nnx.state(flax_layer, nnx.Param)
        assert jax.tree.structure(ours_state) == jax.tree.structure(flax_state)
        nnx.update(flax_layer, ours_state)
        np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(flax_layer(x)),
                                   rtol=1e-5, atol=1e-5, err_msg=type(ours).__name__)


def test_bfloat16_layers_keep_dtype_and_give_float32_accurate_gradients():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 6, 6, 8)).astype(np.float32)
    norm = GroupNorm(8, num_groups=4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16,
                     rngs=nnx.Rngs(0))
    out = norm(jnp.asarray(x, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    reference = GroupNorm(8, num_groups=4, rngs=nnx.Rngs(0))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(reference), atol=4e-2)
    d_scale = jax.grad(lambda n: jnp.sum(n(jnp.asarray(x, jnp.bfloat16)).astype(jnp.float32)))(
        norm).scale[...]
    assert d_scale.dtype == jnp.bfloat16

    linear = Linear(8, 4, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(rng.normal(size=(64, 64, 8)), jnp.bfloat16)
    cotangent = rng.normal(size=(64, 64, 4)) + 0.5        # 4096 summands per bias entry
    d_bias = jax.grad(lambda m: jnp.sum(m(tokens).astype(jnp.float32) * cotangent))(
        linear).bias[...]
    np.testing.assert_allclose(np.asarray(d_bias, np.float32), cotangent.sum((0, 1)),
                               rtol=1e-2)


def test_token_and_column_sums():
    x = np.random.default_rng(7).normal(size=(3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(jax.jit(token_sum)(x)), x.sum((1, 2)), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.jit(column_sum)(x)), x.sum((0, 1, 2)),
                               rtol=1e-5, atol=1e-5)


def test_gelu_matches_torch_exact_gelu():
    x = np.linspace(-8, 8, 4001)
    expected = torch.nn.functional.gelu(torch.tensor(x)).numpy()
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x))), expected, rtol=1e-12,
                                   atol=1e-14)
    float32 = jax.jit(gelu)(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(float32), expected, rtol=0, atol=2e-6)


def test_unsupported_norm_options_fail_by_name():
    x = jnp.ones((2, 4, 8))
    with pytest.raises(ValueError, match="use_bias"):
        GroupNorm(8, num_groups=2, use_bias=False, rngs=nnx.Rngs(0))(x)
    with pytest.raises(ValueError, match="reduction_axes"):
        LayerNorm(8, reduction_axes=(1, 2), rngs=nnx.Rngs(0))(x)
