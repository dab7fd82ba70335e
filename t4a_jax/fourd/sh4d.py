"""4D spherical harmonics (paper Eq. 8): every SH coefficient is a truncated cosine
series over time,

    k(tau) = sum_{i < w} fr_i cos(i pi tau),      tau = t / N_t in [0, 1],

frame t of a clip of N_t + 1 frames at tau = t / N_t (the first frame at 0, the last at
1, as in `hexplane`). Coefficients `fr` are [N, K, 3, w] for N Gaussians with K SH
bases; `fr_0` starts at the static coefficients and the rest at zero, so `w = 1` is
exactly static SH and every `w` starts at the static colour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def init_sh4d(sh: jax.Array, terms: int) -> jax.Array:
    """Cosine-series coefficients [N, K, 3, terms] starting at the static SH [N, K, 3]."""
    if terms < 1:
        raise ValueError(f"init_sh4d: terms={terms} must be >= 1")
    rest = jnp.zeros(sh.shape + (terms - 1,), sh.dtype)
    return jnp.concatenate([sh[..., None], rest], axis=-1)


def sh_at(coefficients: jax.Array, tau: jax.Array) -> jax.Array:
    """SH coefficients [N, K, 3] at time tau (a scalar in [0, 1])."""
    terms = coefficients.shape[-1]
    basis = jnp.cos(jnp.pi * jnp.arange(terms, dtype=coefficients.dtype) * tau)
    if terms == 1:                       # exactly the static coefficients
        return coefficients[..., 0]
    return jnp.einsum("nkcw,w->nkc", coefficients, basis)
