"""Real spherical harmonics of degree 0-3 with the constants of 3D Gaussian Splatting.

The basis is the real, orthonormal SH basis (Condon-Shortley phase included), ordered by
band and then m = -l..l, as in the INRIA 3DGS code and gsplat:
band 1 is (-C1 y, C1 z, -C1 x). Coefficients have shape [..., K, 3] with K >= (d+1)^2;
only the first (d+1)^2 are used at degree d. Colours are `sum_k basis_k * coeff_k + 0.5`
(the +0.5 offset and the clamp at zero live in the rasterizer, as in gsplat).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
         -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
         0.3731763325901154, -0.4570457994644658, 1.445305721320277,
         -0.5900435899266435)

MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Number of basis functions up to and including `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_basis(degree: int, dirs: jax.Array) -> jax.Array:
    """The SH basis [..., (degree+1)^2] at directions `dirs` [..., 3] (normalised here)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    dirs = dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    bases = [jnp.full_like(x, SH_C0)]
    if degree >= 1:
        bases += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        bases += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        bases += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return jnp.stack(bases, axis=-1)


def eval_sh(degree: int, dirs: jax.Array, coeffs: jax.Array) -> jax.Array:
    """Evaluate SH `coeffs` [..., K, 3] at `dirs` [..., 3]; returns [..., 3] (no offset)."""
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(
            f"SH coefficients have {coeffs.shape[-2]} bases, degree {degree} needs {k}")
    basis = sh_basis(degree, dirs)
    return jnp.einsum("...k,...kc->...c", basis, coeffs[..., :k, :])
