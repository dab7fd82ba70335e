"""Tests for the turntable job (t4a_jax.turntable) and its config."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from scenes import icosphere
from t4a_jax.config_files import get_config
from t4a_jax.render.assets import load_asset
from t4a_jax.render.builtin import builtin_object
from t4a_jax.turntable import render_turntable
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


@pytest.fixture(scope="module")
def sphere():
    return icosphere()


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
    config.overflow = "raise"
    with pytest.raises(ValueError, match=r"tile_capacity=32 is too small.*"
                                         r"--config.tile_capacity=\d+"):
        render_turntable(builtin_object(), config)


def test_render_turntable_grows_an_overflowing_capacity():
    """overflow='grow' (the default) renders what an ample capacity renders."""
    config = turntable_config("tiny")
    config.size, config.frames, config.tile_capacity = 32, 2, 32
    grown = render_turntable(builtin_object(), config)
    config.tile_capacity = 8192
    np.testing.assert_allclose(grown, render_turntable(builtin_object(), config), atol=1e-6)


def test_bad_config_values_raise():
    config = turntable_config("tiny")
    config.cameras_per_step = 0
    with pytest.raises(ValueError, match="config.cameras_per_step"):
        render_turntable(builtin_object(), config)
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        turntable_config("huge")
