"""Real spherical harmonics, SH colour helpers and quaternion/covariance helpers.

References are independent: quadrature over the sphere, SciPy's complex spherical
harmonics, SciPy's rotations and plain numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from reference_rasterizer import real_sh_basis
from t4a_jax.render.gaussians import rgb_from_sh_dc, sh_from_rgb
from t4a_jax.render.projection import covariance_3d, quat_to_rotmat
from t4a_jax.render.sh import SH_C0, eval_sh, num_sh_bases, sh_basis


def _random_dirs(rng, n):
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def _sphere_quadrature(n_theta=24, n_phi=48):
    """Product rule: Gauss-Legendre in cos(theta) x uniform in phi (exact for deg < 2n)."""
    mu, w_mu = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * (2.0 * np.pi / n_phi)
    mu_g, phi_g = np.meshgrid(mu, phi, indexing="ij")
    sin_t = np.sqrt(1.0 - mu_g ** 2)
    dirs = np.stack([sin_t * np.cos(phi_g), sin_t * np.sin(phi_g), mu_g], axis=-1)
    weights = w_mu[:, None] * np.full(n_phi, 2.0 * np.pi / n_phi)[None, :]
    return dirs.reshape(-1, 3), weights.reshape(-1)


# ---------------------------------------------------------------- the basis


def test_sh_basis_orthonormal_over_sphere():
    dirs, weights = _sphere_quadrature()
    np.testing.assert_allclose(weights.sum(), 4.0 * np.pi, rtol=1e-12)
    with jax.enable_x64(True):
        basis = np.asarray(sh_basis(3, jnp.asarray(dirs, jnp.float64)))
    assert basis.dtype == np.float64
    assert basis.shape == (dirs.shape[0], 16)
    gram = basis.T @ (basis * weights[:, None])
    np.testing.assert_allclose(gram, np.eye(16), atol=1e-10)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_basis_matches_scipy(degree):
    rng = np.random.default_rng(degree)
    dirs = _random_dirs(rng, 200)
    ours = np.asarray(sh_basis(degree, jnp.asarray(dirs, jnp.float32)))
    assert ours.shape == (200, num_sh_bases(degree))
    np.testing.assert_allclose(ours, real_sh_basis(degree, dirs), atol=1e-6)


def test_sh_basis_band1_hand_values():
    # Along +x, +y, +z band 1 is (-C1 y, C1 z, -C1 x) with C1 = sqrt(3 / (4 pi)).
    c1 = np.sqrt(3.0 / (4.0 * np.pi))
    dirs = jnp.eye(3, dtype=jnp.float32)
    b = np.asarray(sh_basis(1, dirs))
    np.testing.assert_allclose(b[:, 1:], [[0, 0, -c1], [-c1, 0, 0], [0, c1, 0]], atol=1e-7)
    np.testing.assert_allclose(b[:, 0], 1.0 / (2.0 * np.sqrt(np.pi)), atol=1e-7)


def test_sh_basis_normalises_directions():
    rng = np.random.default_rng(10)
    dirs = _random_dirs(rng, 50).astype(np.float32)
    a = np.asarray(sh_basis(3, jnp.asarray(dirs)))
    b = np.asarray(sh_basis(3, jnp.asarray(dirs * 2.5)))
    c = np.asarray(sh_basis(3, jnp.asarray(dirs * 0.03)))
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_sh_bands_parity_and_addition_theorem():
    rng = np.random.default_rng(11)
    dirs = _random_dirs(rng, 100).astype(np.float32)
    a = np.asarray(sh_basis(3, jnp.asarray(dirs)), np.float64)
    neg = np.asarray(sh_basis(3, jnp.asarray(-dirs)), np.float64)
    for l in range(4):
        band = slice(l * l, (l + 1) * (l + 1))
        # Homogeneous polynomial of degree l: Y(-d) = (-1)^l Y(d).
        np.testing.assert_allclose(neg[:, band], (-1) ** l * a[:, band], atol=1e-6)
        # Addition theorem: sum_m Y_lm(d)^2 = (2l + 1) / (4 pi), for every direction.
        np.testing.assert_allclose((a[:, band] ** 2).sum(-1), (2 * l + 1) / (4 * np.pi),
                                   rtol=1e-5)


def test_sh_bands_closed_under_rotation():
    # Each band spans a rotation-invariant space: the band-l basis at rotated directions
    # is an exact linear combination of the band-l basis at the original directions.
    rng = np.random.default_rng(12)
    with jax.enable_x64(True):
        dirs = _random_dirs(rng, 80)
        rot = Rotation.from_rotvec([0.3, -1.1, 0.7]).as_matrix()
        a = np.asarray(sh_basis(3, jnp.asarray(dirs)))
        b = np.asarray(sh_basis(3, jnp.asarray(dirs @ rot.T)))
    for l in range(4):
        band = slice(l * l, (l + 1) * (l + 1))
        coef, *_ = np.linalg.lstsq(a[:, band], b[:, band], rcond=None)
        np.testing.assert_allclose(a[:, band] @ coef, b[:, band], atol=1e-10)
        # The band-to-band matrix of an orthonormal basis is orthogonal.
        np.testing.assert_allclose(coef.T @ coef, np.eye(2 * l + 1), atol=1e-10)


def test_sh_basis_batch_shapes():
    dirs = jnp.ones((2, 5, 3), jnp.float32)
    assert sh_basis(2, dirs).shape == (2, 5, 9)
    assert sh_basis(0, dirs).shape == (2, 5, 1)


# ---------------------------------------------------------------- eval_sh


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_eval_sh_is_basis_times_coeffs(degree):
    rng = np.random.default_rng(20 + degree)
    dirs = _random_dirs(rng, 30).astype(np.float32)
    k = (degree + 1) ** 2
    coeffs = rng.normal(size=(30, 16, 3)).astype(np.float32)
    out = np.asarray(eval_sh(degree, jnp.asarray(dirs), jnp.asarray(coeffs)))
    assert out.shape == (30, 3)
    basis = real_sh_basis(degree, dirs)
    expected = np.einsum("nk,nkc->nc", basis, coeffs[:, :k].astype(np.float64))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # Coefficients past (d+1)^2 are ignored.
    altered = coeffs.copy()
    altered[:, k:] = rng.normal(size=altered[:, k:].shape) * 100.0
    out2 = np.asarray(eval_sh(degree, jnp.asarray(dirs), jnp.asarray(altered)))
    np.testing.assert_array_equal(out, out2)
    # Exactly (d+1)^2 coefficients gives the same.
    out3 = np.asarray(eval_sh(degree, jnp.asarray(dirs), jnp.asarray(coeffs[:, :k])))
    np.testing.assert_allclose(out, out3, atol=1e-6)


def test_eval_sh_broadcasts_dirs_over_camera_batch():
    rng = np.random.default_rng(30)
    dirs = _random_dirs(rng, 8).reshape(2, 4, 3).astype(np.float32)
    coeffs = rng.normal(size=(2, 4, 9, 3)).astype(np.float32)
    out = np.asarray(eval_sh(2, jnp.asarray(dirs), jnp.asarray(coeffs)))
    assert out.shape == (2, 4, 3)
    expected = np.einsum("nk,nkc->nc", real_sh_basis(2, dirs.reshape(8, 3)),
                         coeffs.reshape(8, 9, 3))
    np.testing.assert_allclose(out.reshape(8, 3), expected, atol=1e-5)


@pytest.mark.parametrize("degree", [4, -1])
def test_eval_sh_bad_degree_raises(degree):
    dirs = jnp.ones((3, 3), jnp.float32)
    with pytest.raises(ValueError):
        eval_sh(degree, dirs, jnp.zeros((3, 25, 3), jnp.float32))
    with pytest.raises(ValueError):
        sh_basis(degree, dirs)


def test_eval_sh_too_few_coefficients_raises():
    dirs = jnp.ones((3, 3), jnp.float32)
    with pytest.raises(ValueError):
        eval_sh(2, dirs, jnp.zeros((3, 8, 3), jnp.float32))
    with pytest.raises(ValueError):
        eval_sh(3, dirs, jnp.zeros((3, 9, 3), jnp.float32))
    with pytest.raises(ValueError):
        eval_sh(1, dirs, jnp.zeros((3, 1, 3), jnp.float32))


def test_constants():
    for d in range(4):
        assert num_sh_bases(d) == (d + 1) ** 2
    np.testing.assert_allclose(SH_C0, 1.0 / (2.0 * np.sqrt(np.pi)), rtol=1e-15)


# ---------------------------------------------------------------- Gaussians colour helpers


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_from_rgb_roundtrip_and_view_independence(degree):
    rng = np.random.default_rng(40 + degree)
    rgb = rng.uniform(0.0, 1.0, size=(12, 3)).astype(np.float32)
    sh = sh_from_rgb(jnp.asarray(rgb), degree)
    assert sh.shape == (12, (degree + 1) ** 2, 3)
    np.testing.assert_array_equal(np.asarray(sh[:, 1:]), 0.0)
    np.testing.assert_allclose(np.asarray(rgb_from_sh_dc(sh)), rgb, atol=1e-6)
    # DC coefficient = (rgb - 0.5) * 2 sqrt(pi), derived from Y_00 = 1 / (2 sqrt(pi)).
    np.testing.assert_allclose(np.asarray(sh[:, 0]), (rgb - 0.5) * 2.0 * np.sqrt(np.pi),
                               rtol=1e-5, atol=1e-6)
    # The rendered colour SH(dir) + 0.5 equals rgb in every direction.
    for dirs in (_random_dirs(rng, 12), -_random_dirs(rng, 12)):
        colour = np.asarray(eval_sh(degree, jnp.asarray(dirs, jnp.float32), sh)) + 0.5
        np.testing.assert_allclose(colour, rgb, atol=1e-6)


# ---------------------------------------------------------------- quaternions / covariances


def test_quat_to_rotmat_matches_scipy():
    rng = np.random.default_rng(50)
    quats = rng.normal(size=(64, 4)) * rng.uniform(0.1, 5.0, size=(64, 1))
    ours = np.asarray(quat_to_rotmat(jnp.asarray(quats, jnp.float32)))
    assert ours.shape == (64, 3, 3)
    # SciPy takes (x, y, z, w); ours is (w, x, y, z).
    expected = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    # q and -q give the same rotation.
    neg = np.asarray(quat_to_rotmat(jnp.asarray(-quats, jnp.float32)))
    np.testing.assert_allclose(neg, ours, atol=1e-6)


def test_quat_to_rotmat_hand_cases():
    # Identity; 90 degrees about z maps x -> y.
    r = np.asarray(quat_to_rotmat(jnp.asarray([[2.0, 0.0, 0.0, 0.0],
                                               [np.cos(np.pi / 4), 0.0, 0.0,
                                                np.sin(np.pi / 4)]], jnp.float32)))
    np.testing.assert_allclose(r[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(r[1] @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(r[1] @ [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], atol=1e-6)


def test_covariance_3d_is_r_s2_rt():
    rng = np.random.default_rng(51)
    quats = rng.normal(size=(32, 4))
    scales = rng.uniform(0.01, 2.0, size=(32, 3))
    cov = np.asarray(covariance_3d(jnp.asarray(quats, jnp.float32),
                                   jnp.asarray(scales, jnp.float32)), np.float64)
    assert cov.shape == (32, 3, 3)
    rots = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()
    expected = np.einsum("nij,nj,nkj->nik", rots, scales ** 2, rots)
    np.testing.assert_allclose(cov, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), atol=1e-6)
    # Eigenvalues are the squared scales.
    np.testing.assert_allclose(np.linalg.eigvalsh(cov), np.sort(scales ** 2, axis=-1),
                               rtol=1e-4, atol=1e-5)
