"""Tests for the turntable job (t4a_jax.turntable), its config and the built-in object."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import plyfile
import pytest
import trimesh

from t4a_jax.config_files import get_config
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.ply import save_ply
from t4a_jax.turntable import load_asset, render_turntable
from t4a_jax.video import read_video

REPO = pathlib.Path(__file__).resolve().parents[1]
GREY = 0.498 * 255


def turntable_config(arg: str | None = None):
    return get_config("turntable", arg)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The main job on the tiny config, as a user runs it."""
    out = tmp_path_factory.mktemp("turntable") / "sub" / "t.mp4"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "t4a_jax.turntable", "--config=configs/turntable.py:tiny",
         f"--config.out={out}"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr
    return out, result.stderr


def test_cli_writes_a_rotating_turntable(cli_run):
    out, _ = cli_run
    config = turntable_config("tiny")
    frames = read_video(out).astype(np.float64)
    assert frames.shape == (config.frames, config.size, config.size, 3)
    foreground = np.abs(frames - GREY).max(axis=-1) > 30
    assert (foreground.mean(axis=(1, 2)) > 0.05).all()        # the object is in every frame
    assert (foreground.mean(axis=(1, 2)) < 0.8).all()         # and the background around it
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    assert (change > 2.0).all()                               # it turns between frames


def test_cli_logs_path_count_and_rate(cli_run):
    out, stderr = cli_run
    assert str(out) in stderr
    assert f"{builtin_object().num_gaussians} Gaussians" in stderr
    assert "frames/s" in stderr


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
    """A small icosphere, red on +x and blue elsewhere."""
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=0.8)
    mesh.visual.vertex_colors = np.where(mesh.vertices[:, :1] > 0, (255, 0, 0, 255),
                                         (0, 0, 255, 255))
    return mesh


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


def test_render_turntable_pads_the_last_chunk(tmp_path, sphere):
    path = tmp_path / "sphere.obj"
    sphere.export(path)
    g = load_asset(str(path), mesh_samples=300)
    config = turntable_config("tiny")
    config.size, config.frames = 32, 4
    config.cameras_per_step = 3        # chunks [0, 1, 2] and [3, pad, pad]
    chunked = render_turntable(g, config)
    config.cameras_per_step = 4
    whole = render_turntable(g, config)
    assert chunked.shape == (4, 32, 32, 3) and chunked.dtype == np.float32
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert chunked.min() >= 0.0 and chunked.max() <= 1.0
    # Azimuth 0 looks at the red +x side, azimuth 180 at the blue -x side.
    centre = chunked[:, 12:20, 12:20].mean(axis=(1, 2))
    assert centre[0, 0] > centre[0, 2] and centre[2, 2] > centre[2, 0]


def test_render_turntable_reports_tile_overflow():
    config = turntable_config("tiny")
    config.size, config.frames, config.tile_capacity = 32, 2, 32
    with pytest.raises(ValueError, match=r"tile_capacity=32 is too small.*"
                                         r"--config.tile_capacity=\d+"):
        render_turntable(builtin_object(), config)


def test_bad_config_values_raise():
    config = turntable_config("tiny")
    config.cameras_per_step = 0
    with pytest.raises(ValueError, match="config.cameras_per_step"):
        render_turntable(builtin_object(), config)
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        turntable_config("huge")
