"""Static assets (`t4a_jax.render.assets.load_asset`) and the built-in object
(`t4a_jax.render.builtin`): the built-in creature, 3DGS `.ply` files, meshes, and the
errors for files that are none of these."""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from scenes import icosphere
from t4a_jax.render.assets import load_asset
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.ply import save_ply


def test_builtin_object_is_deterministic_and_fits_the_unit_sphere():
    g = builtin_object(seed=0)
    again = builtin_object(seed=0)
    other = builtin_object(seed=1)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(np.asarray(getattr(g, name)),
                                      np.asarray(getattr(again, name)), err_msg=name)
    assert not np.array_equal(np.asarray(g.means), np.asarray(other.means))
    assert 1000 <= g.num_gaussians <= 10000 and g.sh_degree == 0
    means, scales = np.asarray(g.means), np.asarray(g.scales)
    assert means.dtype == np.float32
    assert (np.linalg.norm(means, axis=1) + 3 * scales.max(axis=1) <= 1.0).all()
    assert means[:, 2].max() - means[:, 2].min() > 0.8        # tall: it stands on its legs
    rgb_spread = np.asarray(g.sh)[:, 0].std(axis=0)
    assert (rgb_spread > 0.3).all()                           # colourful


@pytest.fixture(scope="module")
def sphere():
    return icosphere()


def test_load_asset_builtin_and_3dgs_ply(tmp_path):
    g = builtin_object(seed=3)
    np.testing.assert_array_equal(np.asarray(load_asset("", seed=3).means),
                                  np.asarray(g.means))
    path = tmp_path / "g.ply"
    save_ply(path, g)
    back = load_asset(str(path))
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)),
                                      np.asarray(getattr(g, name)), err_msg=name)


@pytest.mark.parametrize("ext", ["obj", "ply"])
def test_load_asset_mesh(tmp_path, sphere, ext):
    path = tmp_path / f"sphere.{ext}"
    sphere.export(path)
    g = load_asset(str(path), mesh_samples=100)
    assert g.num_gaussians == len(sphere.vertices) + 100


def test_load_asset_rejects_unknown_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    points = tmp_path / "points.ply"
    records = np.zeros(5, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")]).write(str(points))
    not_ply = tmp_path / "fake.ply"
    not_ply.write_text("solid ascii stl\n")
    cases = [(text, "unknown asset type"), (points, "neither 3DGS"),
             (not_ply, "not a PLY"), (tmp_path / "missing.ply", "no such file")]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            load_asset(str(path))
        assert str(path) in str(info.value)
