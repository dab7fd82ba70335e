"""`python -m tools.prepare_assets`: meshes baked in Blender (skipped, saying so, where
Blender is not installed) and converted to Gaussians; the bake's lighting and emission
checked on cubes, the Gaussians' colours against the baked vertex colours, and broken
or empty meshes reported by name while the others are prepared."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import trimesh

from t4a_jax.render.gaussians import rgb_from_sh_dc
from t4a_jax.render.ply import load_ply
from tools.prepare_assets import prepare

FAST = ["--set", "preview.frames=2", "--set", "preview.size=32", "--set", "mesh_samples=200",
        "--set", "samples=16"]
KEY_MARGIN = 1.5        # key-lit side / opposite side, mean linear radiance (measured 2.3)


def _blender() -> str:
    path = shutil.which("blender")
    if path is None:
        pytest.skip("Blender is not installed (Debian: apt-get install blender): the bake "
                    "tests are skipped")
    return path


def _cube(path, **visual) -> str:
    mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide()
    for key, value in visual.items():
        setattr(mesh.visual, key, value)
    mesh.export(path)
    return str(path)


def _broken_and_empty(folder) -> list[str]:
    (folder / "broken.obj").write_text("this is not an OBJ file\nv 1 2\nf 1 2 9\n")
    (folder / "empty.obj").write_text("# no geometry\n")
    return [str(folder / "broken.obj"), str(folder / "empty.obj")]


def _vertex_rgb(path) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.load(path, process=False)
    return np.asarray(mesh.vertices), np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0


def _check_gaussians_carry_vertex_colours(out, name) -> None:
    """The first V Gaussians sit at the baked mesh's vertices with its colours."""
    vertices, rgb = _vertex_rgb(out / "baked" / f"{name}.ply")
    gaussians = load_ply(str(out / "static" / f"{name}.ply"))
    n = len(vertices)
    np.testing.assert_allclose(np.asarray(gaussians.means)[:n], vertices, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rgb_from_sh_dc(gaussians.sh[:n])), rgb,
                               atol=1e-5)


def test_the_key_lit_side_of_a_grey_cube_is_brighter(tmp_path, capsys):
    blender = _blender()
    cube = _cube(tmp_path / "cube.obj")
    out = tmp_path / "out"
    meshes = [cube, *_broken_and_empty(tmp_path)]
    assert prepare.main(["--meshes", *meshes, "--out", str(out), "--blender", blender,
                         *FAST]) == 1                      # two of three failed
    summary = {r["name"]: r for r in json.load(open(out / "summary.json"))}
    assert summary["cube"]["status"] == "prepared" and summary["cube"]["vertices"] == 98
    for name in ("broken", "empty"):
        assert summary[name]["status"] == "failed" and f"{name}.obj" in summary[name]["error"]
    err = capsys.readouterr().err
    assert "broken failed" in err and "empty failed" in err
    baked = np.load(out / "work" / "cube" / "bake.npz")
    config = prepare.load_config("prepare_assets", [])
    key = [s for s in prepare.light_specs(config) if s["name"] == "key"][0]
    towards_key = np.asarray(key["position"]) / np.linalg.norm(key["position"])
    normals = baked["vertices"] / np.linalg.norm(baked["vertices"], axis=1, keepdims=True)
    radiance = baked["colors"].mean(axis=1)
    facing = normals @ towards_key
    lit, opposite = radiance[facing > 0.5].mean(), radiance[facing < -0.5].mean()
    assert lit > KEY_MARGIN * opposite, (lit, opposite)
    np.testing.assert_allclose(np.linalg.norm(baked["vertices"], axis=1).max(), 0.8, rtol=1e-5)
    _check_gaussians_carry_vertex_colours(out, "cube")
    for path in ("previews/cube.mp4", "previews/cube.gif", "baked/cube.glb",
                 "contact_sheet.png", "summary.md"):
        assert (out / path).is_file(), path
    # A rerun keeps the prepared cube.
    assert prepare.main(["--meshes", cube, "--out", str(out), "--blender", blender,
                         *FAST]) == 0
    assert json.load(open(out / "summary.json"))[0]["status"] == "kept"


def test_an_emissive_cube_bakes_to_its_emission_colour(tmp_path):
    blender = _blender()
    emission = (0.8, 0.3, 0.1)
    material = trimesh.visual.material.PBRMaterial(
        baseColorFactor=[0, 0, 0, 255], emissiveFactor=list(emission),
        metallicFactor=0.0, roughnessFactor=1.0)
    cube = str(tmp_path / "glow.glb")
    mesh = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    mesh.visual = trimesh.visual.TextureVisuals(material=material)
    mesh.export(cube)
    dark = [f"lights.{name}.power=0" for name in ("key", "fill", "back")]
    out = tmp_path / "out"
    assert prepare.main(["--meshes", cube, "--out", str(out), "--blender", blender, *FAST,
                         *sum((["--set", s] for s in dark), []),
                         "--set", "background.strength=0"]) == 0
    baked = np.load(out / "work" / "glow" / "bake.npz")
    np.testing.assert_allclose(baked["colors"], np.broadcast_to(emission, baked["colors"].shape),
                               atol=2e-3)
    _, rgb = _vertex_rgb(out / "baked" / "glow.ply")
    np.testing.assert_allclose(rgb, np.round(prepare.linear_to_srgb(emission) * 255) / 255
                               * np.ones_like(rgb), atol=1.5 / 255)
    _check_gaussians_carry_vertex_colours(out, "glow")


def test_without_blender_coloured_meshes_convert_and_bad_ones_are_named(tmp_path, capsys,
                                                                          monkeypatch):
    colours = np.random.default_rng(0).integers(0, 256, (98, 4), np.uint8)
    colours[:, 3] = 255
    cube = _cube(tmp_path / "painted.ply", vertex_colors=colours)
    out = tmp_path / "out"
    monkeypatch.setattr(prepare.shutil, "which", lambda name: None)
    assert prepare.main(["--meshes", cube, "--out", str(out)]) == 1
    assert "apt-get install blender" in capsys.readouterr().err and not out.exists()
    meshes = [cube, *_broken_and_empty(tmp_path)]
    assert prepare.main(["--meshes", *meshes, "--out", str(out), "--no-bake", *FAST]) == 1
    summary = {r["name"]: r for r in json.load(open(out / "summary.json"))}
    assert summary["painted"]["status"] == "prepared"
    assert {summary["broken"]["status"], summary["empty"]["status"]} == {"failed"}
    gaussians = load_ply(str(out / "static" / "painted.ply"))
    mesh = trimesh.load(cube, process=False)
    rgb = np.asarray(rgb_from_sh_dc(gaussians.sh[:len(mesh.vertices)]))
    np.testing.assert_allclose(rgb, np.asarray(mesh.visual.vertex_colors)[:, :3] / 255,
                               atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(gaussians.means), axis=1).max(),
                               0.8, rtol=1e-5)
    with pytest.raises(ValueError, match="no config key 'lights.key.watts'"):
        prepare.load_config("prepare_assets", ["lights.key.watts=3"])
