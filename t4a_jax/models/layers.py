"""Linear, GroupNorm and LayerNorm: flax.nnx's layers (same parameters, names and init,
forward results equal up to rounding) whose backward passes sum over tokens fast on CPU.

Why: the gradient of a per-channel parameter (a bias, a norm's scale and shift) sums the
cotangent over every leading axis of [N, F, H, W, C]. XLA:CPU (jaxlib 0.10) compiles a
reduction over several axes, or one fused with the elementwise work that produces its
operand, into a generic loop 5-20x slower than a plain sum over an [M, C] view (which it
splits into fast windowed sums); it folds a reshape back into the reduction, and with
the reduce-fusion workaround (`t4a_jax.xla_workarounds`) YNNPACK cannot take it either.
Here the reductions run on explicit [rows, S, C] views behind an optimization barrier on
CPU (elsewhere the views are plain reshapes), through custom VJPs:

- `add_bias(y, bias)`: y + bias; d bias = `column_sum` of the cotangent (in float32 or
  wider);
- `normalize(x, scale, bias, groups, eps)`: group normalisation of x [N, S, C] over S and
  the C / groups channels of each group (LayerNorm is S = 1, groups = 1), two-pass
  statistics in float32 or wider, and a backward pass that needs two token sums.

`gelu` is the exact GELU in PyTorch's erf form, half the cost of `jax.nn.gelu`'s erfc
on XLA:CPU. (`nnx.Conv` keeps XLA's own bias gradient: about 3 % of the tiny U-Net's
backward pass.)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2))) (as torch computes it)."""
    return 0.5 * x * (1 + jax.lax.erf(x * jnp.asarray(0.5 ** 0.5, x.dtype)))


def accumulation_dtype(dtype) -> jnp.dtype:
    """Where sums and statistics are kept: float32, or float64 for float64 inputs."""
    return jnp.promote_types(dtype, jnp.float32)


def _token_view(x: jax.Array, rows: int) -> jax.Array:
    """x as [rows, S, C] (S = everything between), on CPU materialised as that shape
    (see the module docstring; measured: dropping the barrier where the view merges no
    axes makes the U-Net's backward pass 5 % slower)."""
    view = x.reshape(rows, -1, x.shape[-1])
    if jax.default_backend() == "cpu":
        view = jax.lax.optimization_barrier(view)
    return view


def token_sum(x: jax.Array) -> jax.Array:
    """[N, ..., C] -> [N, C]: the sum over every axis between the first and the last."""
    return jnp.sum(_token_view(x, x.shape[0]), axis=1)


def column_sum(x: jax.Array) -> jax.Array:
    """[..., C] -> [C]: the sum over every axis but the last."""
    return jnp.sum(_token_view(x, 1), axis=1)[0]


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y [..., C] + bias [C] (bias cast to y's dtype)."""
    return y + bias.astype(y.dtype)


def _add_bias_fwd(y, bias):
    return add_bias(y, bias), bias          # kept for its dtype only


def _add_bias_bwd(bias, d_out):
    total = column_sum(d_out.astype(accumulation_dtype(d_out.dtype)))
    return d_out, total.astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _per_channel(stat: jax.Array, channels: int) -> jax.Array:
    """[N, G] -> [N, 1, C]: each group's statistic repeated over its channels."""
    n, groups = stat.shape
    return jnp.repeat(stat, channels // groups, axis=1)[:, None, :]


def _group_mean(per_channel_sum: jax.Array, groups: int, tokens: int) -> jax.Array:
    """[N, C] sums over S = `tokens` -> [N, G] means over S x (C / G)."""
    n, c = per_channel_sum.shape
    return per_channel_sum.reshape(n, groups, c // groups).sum(-1) / (tokens * (c // groups))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int,
              eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) * scale + bias for x [N, S, C], the statistics over S
    and each group's C / `groups` channels; scale, bias [C]. Computed in float32 (float64
    for float64 inputs), returned in x's dtype."""
    return _normalize_fwd(x, scale, bias, groups, eps)[0]


def _statistics(x, groups):
    n, s, c = x.shape
    mean = _group_mean(token_sum(x), groups, s)                       # [N, G]
    centred = x - _per_channel(mean, c)
    var = _group_mean(token_sum(centred * centred), groups, s)
    return centred, mean, var


def _normalize_fwd(x, scale, bias, groups, eps):
    acc = accumulation_dtype(x.dtype)
    centred, mean, var = _statistics(x.astype(acc), groups)
    inv_std = jax.lax.rsqrt(var + eps)                                  # [N, G]
    y = centred * _per_channel(inv_std, x.shape[-1]) * scale.astype(acc) + bias.astype(acc)
    return y.astype(x.dtype), (x, mean, inv_std, scale, bias)


def _normalize_bwd(groups, eps, residuals, d_out):
    x, mean, inv_std, scale, bias = residuals
    acc = inv_std.dtype
    n, s, c = x.shape
    inv_std_c = _per_channel(inv_std, c)
    normalized = (x.astype(acc) - _per_channel(mean, c)) * inv_std_c
    d_out = d_out.astype(acc)
    d_sum = token_sum(d_out)                                            # [N, C]
    d_dot = token_sum(d_out * normalized)                               # [N, C]
    scale_acc = scale.astype(acc)
    mean_d = _group_mean(d_sum * scale_acc, groups, s)
    mean_d_dot = _group_mean(d_dot * scale_acc, groups, s)
    d_x = inv_std_c * (d_out * scale_acc - _per_channel(mean_d, c)
                       - normalized * _per_channel(mean_d_dot, c))
    return (d_x.astype(x.dtype), column_sum(d_dot).astype(scale.dtype),
            column_sum(d_sum).astype(bias.dtype))


normalize.defvjp(_normalize_fwd, _normalize_bwd)


class Linear(nnx.Linear):
    """`nnx.Linear` with the bias added by `add_bias`."""

    def __call__(self, inputs: jax.Array) -> jax.Array:
        if self.bias is None:
            return super().__call__(inputs)
        kernel, bias = self.kernel[...], self.bias[...]
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        y = self.dot_general(inputs, kernel, (((inputs.ndim - 1,), (0,)), ((), ())),
                             precision=self.precision)
        return add_bias(y, bias)


def _require_default_norm(norm: nnx.Module, axes: tuple[str, ...]) -> None:
    """Fail on the nnx options `normalize` does not implement (naming them)."""
    unsupported = [name for name in ("use_scale", "use_bias") if not getattr(norm, name)]
    unsupported += [name for name in axes if getattr(norm, name) not in (None, -1)]
    if unsupported:
        raise ValueError(f"{type(norm).__name__} supports only the default {unsupported} "
                         f"(scale, bias, normalisation over the trailing axes); use flax's "
                         f"nnx.{type(norm).__name__} for other settings")


class GroupNorm(nnx.GroupNorm):
    """`nnx.GroupNorm` (statistics over every axis but the first, per group of channels;
    scale and bias required) computed by `normalize`."""

    def __call__(self, x: jax.Array) -> jax.Array:
        _require_default_norm(self, ("reduction_axes",))
        x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]),
                                            dtype=self.dtype)
        y = normalize(x.reshape(x.shape[0], -1, x.shape[-1]), scale, bias,
                      self.num_groups, self.epsilon)
        return y.reshape(x.shape)


class LayerNorm(nnx.LayerNorm):
    """`nnx.LayerNorm` over the last axis (scale and bias required) computed by
    `normalize`."""

    def __call__(self, x: jax.Array) -> jax.Array:
        _require_default_norm(self, ("reduction_axes", "feature_axes"))
        x, scale, bias = self.promote_dtype((x, self.scale[...], self.bias[...]),
                                            dtype=self.dtype)
        y = normalize(x.reshape(-1, 1, x.shape[-1]), scale, bias, 1, self.epsilon)
        return y.reshape(x.shape)
