"""Tests for the 3DGS `.ply` reader and writer (t4a_jax.render.ply)."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import plyfile
import pytest

from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.ply import PlyFormatError, load_ply, save_ply


def random_gaussians(n: int, degree: int, seed: int = 0) -> Gaussians:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return Gaussians(means=jnp.asarray(f32(n, 3)), quats=jnp.asarray(f32(n, 4)),
                     log_scales=jnp.asarray(f32(n, 3)),
                     opacity_logits=jnp.asarray(f32(n)), sh=jnp.asarray(f32(n, k, 3)))


def write_vertex_ply(path, columns: dict[str, np.ndarray]) -> None:
    n = len(next(iter(columns.values())))
    records = np.empty(n, dtype=[(name, "<f4") for name in columns])
    for name, values in columns.items():
        records[name] = values
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")]).write(str(path))


def columns_of(path) -> dict[str, np.ndarray]:
    vertex = plyfile.PlyData.read(str(path))["vertex"]
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_round_trip_is_bit_exact(tmp_path, degree):
    g = random_gaussians(57, degree, seed=degree)
    path = tmp_path / "g.ply"
    save_ply(path, g)
    back = load_ply(path)
    assert back.sh.shape == (57, (degree + 1) ** 2, 3)
    assert back.sh_degree == degree
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        got = np.asarray(getattr(back, name))
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, np.asarray(getattr(g, name)), err_msg=name)


def test_written_layout(tmp_path):
    g = random_gaussians(11, 2, seed=7)
    path = tmp_path / "g.ply"
    save_ply(str(path), g)
    data = plyfile.PlyData.read(str(path))
    assert not data.text and data.byte_order == "<"
    assert [el.name for el in data.elements] == ["vertex"]
    rest = [f"f_rest_{i}" for i in range(24)]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + rest
                + ["opacity", "scale_0", "scale_1", "scale_2",
                   "rot_0", "rot_1", "rot_2", "rot_3"])
    props = data["vertex"].properties
    assert [p.name for p in props] == expected
    assert all(p.val_dtype == "f4" for p in props)

    cols = columns_of(path)
    sh = np.asarray(g.sh)
    means = np.asarray(g.means)
    for i, axis in enumerate("xyz"):
        np.testing.assert_array_equal(cols[axis], means[:, i])
    for name in ("nx", "ny", "nz"):
        np.testing.assert_array_equal(cols[name], 0.0)
    for c in range(3):
        np.testing.assert_array_equal(cols[f"f_dc_{c}"], sh[:, 0, c])
        # channel-major: f_rest_{c*8 + (b-1)} is channel c of SH basis b (b = 1..8)
        for b in range(1, 9):
            np.testing.assert_array_equal(cols[f"f_rest_{c * 8 + b - 1}"], sh[:, b, c])
    np.testing.assert_array_equal(cols["opacity"], np.asarray(g.opacity_logits))
    for i in range(3):
        np.testing.assert_array_equal(cols[f"scale_{i}"], np.asarray(g.log_scales)[:, i])
    for i in range(4):
        np.testing.assert_array_equal(cols[f"rot_{i}"], np.asarray(g.quats)[:, i])


def test_loads_other_property_order_and_types(tmp_path):
    """Properties are found by name; float64 values are cast; unknown extras ignored."""
    g = random_gaussians(5, 1, seed=3)
    path = tmp_path / "g.ply"
    save_ply(path, g)
    cols = columns_of(path)
    del cols["nx"], cols["ny"], cols["nz"]
    names = list(reversed(cols)) + ["extra"]
    records = np.empty(5, dtype=[(name, "<f8") for name in names])
    for name in names:
        records[name] = cols.get(name, np.arange(5.0))
    other = tmp_path / "other.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")], text=True).write(
        str(other))
    back = load_ply(other)
    np.testing.assert_array_equal(np.asarray(back.sh), np.asarray(g.sh))
    np.testing.assert_array_equal(np.asarray(back.quats), np.asarray(g.quats))


def test_truncated_file_raises_with_path(tmp_path):
    path = tmp_path / "cut.ply"
    save_ply(path, random_gaussians(100, 3))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="cut.ply") as info:
        load_ply(path)
    assert str(path) in str(info.value)


def test_not_a_ply_raises(tmp_path):
    path = tmp_path / "junk.ply"
    path.write_bytes(b"hello, this is not a ply\n\x00\x01\x02")
    with pytest.raises(PlyFormatError, match="junk.ply"):
        load_ply(path)


def test_missing_properties_are_named(tmp_path):
    path = tmp_path / "g.ply"
    save_ply(path, random_gaussians(4, 0))
    cols = columns_of(path)
    del cols["rot_3"], cols["scale_1"]
    write_vertex_ply(path, cols)
    with pytest.raises(ValueError, match=r"missing properties \['rot_3', 'scale_1'\]") as info:
        load_ply(path)
    assert str(path) in str(info.value)


def test_wrong_f_rest_count_raises(tmp_path):
    path = tmp_path / "g.ply"
    save_ply(path, random_gaussians(4, 1))
    cols = columns_of(path)
    del cols["f_rest_8"]  # 8 f_rest properties: no SH degree has that many
    write_vertex_ply(path, cols)
    with pytest.raises(ValueError, match="8 f_rest") as info:
        load_ply(path)
    assert str(path) in str(info.value)


def test_no_vertex_element_raises(tmp_path):
    path = tmp_path / "faces.ply"
    records = np.zeros(3, dtype=[("x", "<f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(records, "point")]).write(str(path))
    with pytest.raises(ValueError, match="vertex") as info:
        load_ply(path)
    assert str(path) in str(info.value)


def test_missing_file_raises(tmp_path):
    path = tmp_path / "nowhere.ply"
    with pytest.raises(ValueError, match="nowhere.ply"):
        load_ply(path)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(self, stream):
        stream.write(b"ply\nformat binary_little_endian 1.0\n")
        raise OSError("disk full")

    monkeypatch.setattr(plyfile.PlyData, "write", broken_write)
    path = tmp_path / "g.ply"
    with pytest.raises(OSError, match="disk full"):
        save_ply(path, random_gaussians(10, 0))
    assert os.listdir(tmp_path) == []


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "g.ply"
    old = random_gaussians(6, 0, seed=1)
    save_ply(path, old)
    before = path.read_bytes()

    def broken_write(self, stream):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(plyfile.PlyData, "write", broken_write)
    with pytest.raises(RuntimeError):
        save_ply(path, random_gaussians(6, 0, seed=2))
    assert os.listdir(tmp_path) == ["g.ply"]
    assert path.read_bytes() == before
