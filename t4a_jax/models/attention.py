"""Multi-head attention with diffusers' parameter names (`to_q`, `to_k`, `to_v`, `to_out.0`).

Tokens are [N, L, C]. The kernel is `jax.nn.dot_product_attention` on [N, L, H, D]
heads; `implementation` is passed through (None lets JAX choose, 'cudnn' selects the
fused GPU kernel in bf16/fp16, 'xla' the portable one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def attend(q: jax.Array, k: jax.Array, v: jax.Array, heads: int, *,
           implementation: str | None = None) -> jax.Array:
    """Scaled dot-product attention of q [N, Lq, C] over k, v [N, Lk, C] with `heads`
    heads; returns [N, Lq, C]."""
    n, lq, c = q.shape
    split = lambda x: x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads)
    out = jax.nn.dot_product_attention(split(q), split(k), split(v),
                                       implementation=implementation)
    return out.reshape(n, lq, v.shape[-1])


class Attention(nnx.Module):
    """Self- or cross-attention: q from `x` [N, Lq, query_dim], k/v from `context`
    [N, Lk, cross_dim] (or `x`), projections without bias, output projection with bias."""

    def __init__(self, query_dim: int, *, heads: int, head_dim: int,
                 cross_dim: int | None = None, dtype=jnp.float32,
                 implementation: str | None = None, rngs: nnx.Rngs):
        inner = heads * head_dim
        cross_dim = cross_dim or query_dim
        self.heads = heads
        self.implementation = implementation
        self.to_q = nnx.Linear(query_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_k = nnx.Linear(cross_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_v = nnx.Linear(cross_dim, inner, use_bias=False, dtype=dtype, rngs=rngs)
        self.to_out = nnx.List([nnx.Linear(inner, query_dim, dtype=dtype, rngs=rngs)])

    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        context = x if context is None else context
        out = attend(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                     implementation=self.implementation)
        return self.to_out[0](out)
