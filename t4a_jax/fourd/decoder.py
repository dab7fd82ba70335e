"""The multi-head deformation decoder of Stage Two (paper Eq. 7), as a pytree of arrays.

    params = init_decoder(key, in_dim=16, width=64)
    d_position, d_rotation, d_scale = apply_decoder(params, features)   # [N, 3/4/3]

A trunk (`depth` layers Linear -> ReLU, from the `in_dim` features: HexPlane features,
and later the diffusion features beside them) feeds three heads, each ReLU -> Linear
(width) -> ReLU -> Linear, for the position offset [N, 3], the quaternion residual (w,
x, y, z) [N, 4] and the log-scale offset [N, 3]. The last layer of every head is zero,
so a new decoder moves nothing: deformation starts at the static asset.

Parameters: {"trunk": [(W [in, out], b [out]), ...], "heads": {"position" | "rotation" |
"scale": [(W, b), (W, b)]}}; hidden layers use LeCun-normal weights and zero biases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

HEADS = {"position": 3, "rotation": 4, "scale": 3}


def _linear(key: jax.Array, fan_in: int, fan_out: int, zero: bool = False) -> tuple:
    weight = (jnp.zeros((fan_in, fan_out), jnp.float32) if zero else
              jax.random.normal(key, (fan_in, fan_out), jnp.float32) / jnp.sqrt(fan_in))
    return weight, jnp.zeros((fan_out,), jnp.float32)


def init_decoder(key: jax.Array, in_dim: int, width: int = 64, depth: int = 1
                 ) -> dict[str, Any]:
    """Decoder parameters (see the module docstring)."""
    if depth < 1 or width < 1 or in_dim < 1:
        raise ValueError(f"init_decoder: in_dim={in_dim}, width={width}, depth={depth} "
                         f"must be >= 1")
    keys = iter(jax.random.split(key, depth + len(HEADS)))
    trunk = [_linear(next(keys), in_dim if i == 0 else width, width) for i in range(depth)]
    heads = {name: [_linear(next(keys), width, width), _linear(None, width, out, zero=True)]
             for name, out in HEADS.items()}
    return {"trunk": trunk, "heads": heads}


def apply_decoder(params: dict[str, Any], features: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(d_position [N, 3], d_rotation [N, 4], d_scale [N, 3]) of features [N, in_dim]."""
    h = features
    for weight, bias in params["trunk"]:
        h = jax.nn.relu(h @ weight + bias)
    outputs = []
    for name in HEADS:
        (w1, b1), (w2, b2) = params["heads"][name]
        outputs.append(jax.nn.relu(jax.nn.relu(h) @ w1 + b1) @ w2 + b2)
    return tuple(outputs)
