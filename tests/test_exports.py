"""The animate job's exports (`t4a_jax.export`): the animated glTF read back by
pygltflib and trimesh, and the viewer page in a real browser (headless Chromium over
SwiftShader WebGL2, driven by Playwright; skipped with the reason when either is
missing)."""

from __future__ import annotations

import base64
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import trimesh

from browser import browser, open_page  # noqa: F401 (the fixture)
from t4a_jax.animate.job import Inputs, make_asset, mesh_export
from t4a_jax.export import Tracks, write_animated_glb, write_viewer
from t4a_jax.export.tracks import grid_queries, video_tracks
from t4a_jax.fourd import MotionConfig, HexPlaneConfig, deform, init_motion_field
from t4a_jax.reconstruction.asset import Asset4D, load_asset4d, save_asset4d
from t4a_jax.render.assets import load_asset
from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.mesh import load_meshes
from t4a_jax.render.ply import load_ply
from t4a_jax.render.views import ViewRenderer, ring_views

pygltflib = pytest.importorskip("pygltflib")

MOTION = MotionConfig(hexplane=HexPlaneConfig(resolutions=((4, 4, 4, 4),), channels=4),
                      width=8, sh_terms=1)


def _moving_field(canonical, seed: int = 0, scale: float = 0.5):
    """A field whose planes and decoder are random (a new field is the identity and
    constant in time), so things move, and differently at each frame."""
    field = init_motion_field(jax.random.key(seed), canonical, MOTION)

    def noisy(tree, key, amount):
        leaves, structure = jax.tree.flatten(tree)
        keys = jax.random.split(key, len(leaves))
        return jax.tree.unflatten(structure, [x + amount * jax.random.normal(k, x.shape)
                                              for k, x in zip(keys, leaves)])

    planes = noisy(field.hexplane.planes, jax.random.key(seed + 1), 1.0)
    return field.replace(hexplane=field.hexplane.replace(planes=planes),
                         decoder=noisy(field.decoder, jax.random.key(seed + 2), scale))


def _accessor(gltf, blob: bytes, index: int) -> np.ndarray:
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[accessor.type]
    dtype = {5126: np.float32, 5125: np.uint32}[accessor.componentType]
    data = np.frombuffer(blob, dtype, accessor.count * width,
                         view.byteOffset + (accessor.byteOffset or 0))
    return data.reshape(accessor.count, width)


def test_animated_glb_moves_the_input_vertices_as_the_field_moves_them(tmp_path):
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.7)
    mesh.vertices[:, 1] *= 1.5                      # taller along +y, the file's up
    source = str(tmp_path / "model.glb")
    mesh.export(source)
    vertices = np.concatenate([m.vertices for m in load_meshes(source)])
    inputs = Inputs(source, load_asset(source, mesh_samples=500), True, "a ball bounces", "y")
    asset_dir = tmp_path / "asset"
    asset_dir.mkdir()
    make_asset(inputs, ml_collections.ConfigDict({"radius": 0.8}), str(asset_dir))
    frame = json.loads((asset_dir / "normalisation.json").read_text())
    canonical = load_ply(str(asset_dir / "static.ply"))
    # Normalised: +z up (the y extent became z), farthest centre at the radius.
    means = np.asarray(canonical.means)
    assert np.ptp(means[:, 2]) > 1.3 * np.ptp(means[:, 1])
    np.testing.assert_allclose(np.linalg.norm(means - (means.min(0) + means.max(0)) / 2,
                                              axis=1).max(), 0.8, rtol=1e-5)
    num_frames = 5
    field = _moving_field(canonical)
    save_asset4d(str(tmp_path / "reconstruct" / "asset"),
                 Asset4D(field, canonical, MOTION, num_frames, 8.0, "ball", "a ball"))
    out = tmp_path / "export"
    out.mkdir()
    path = mesh_export(inputs, str(asset_dir),
                       load_asset4d(str(tmp_path / "reconstruct" / "asset")), str(out), fps=8.0)

    gltf = pygltflib.GLTF2().load(path)
    blob = gltf.binary_blob()
    primitive = gltf.meshes[0].primitives[0]
    base = _accessor(gltf, blob, primitive.attributes.POSITION)
    assert base.shape == vertices.shape
    np.testing.assert_allclose(base, vertices, atol=1e-6)
    assert len(primitive.targets) == num_frames
    assert gltf.meshes[0].extras["targetNames"] == [f"frame_{f:03d}" for f in range(5)]
    # Independently: the field at the vertex Gaussians (the first V), in the file's
    # frame: p_file = R^T (p / scale + centre), R = +90 degrees about x (y-up -> z-up).
    rotation = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    moved_any = 0.0
    for f, target in enumerate(primitive.targets):
        posed = np.asarray(deform(field, canonical, jnp.float32(f / (num_frames - 1))).means)
        expected = (posed[:len(vertices)] / frame["scale"] + frame["centre"]) @ rotation
        got = base + _accessor(gltf, blob, target["POSITION"] if isinstance(target, dict)
                               else target.POSITION)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)   # float32
        moved_any = max(moved_any, float(np.abs(expected - vertices).max()))
    assert moved_any > 0.01
    # The animation plays target f alone at time f / fps.
    sampler = gltf.animations[0].samplers[0]
    times = _accessor(gltf, blob, sampler.input)[:, 0]
    np.testing.assert_allclose(times, np.arange(num_frames) / 8.0)
    weights = _accessor(gltf, blob, sampler.output).reshape(num_frames, num_frames)
    np.testing.assert_array_equal(weights, np.eye(num_frames))
    assert gltf.animations[0].channels[0].target.path == "weights"
    # trimesh reads it back as the same mesh.
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == len(vertices) and len(loaded.faces) == len(mesh.faces)


def test_animated_glb_rejects_mismatched_arrays(tmp_path):
    v, faces = np.zeros((3, 3)), np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="frames"):
        write_animated_glb(str(tmp_path / "a.glb"), v, faces, np.zeros((2, 4, 3)), fps=8)
    with pytest.raises(ValueError, match="face indices"):
        write_animated_glb(str(tmp_path / "a.glb"), v, faces + 1, np.zeros((2, 3, 3)), fps=8)
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------- viewer

def _coverage(page, views, index: int, frame: int, size: int) -> np.ndarray:
    page.evaluate("([v, k, f, s]) => { t4a.setFrame(f); t4a.setCamera(v, k, s, s); }",
                  [np.asarray(views.viewmats[index]).reshape(-1).tolist(),
                   np.asarray(views.Ks[index]).reshape(-1).tolist(), frame, size])
    data = base64.b64decode(page.evaluate("t4a.alpha()"))
    return np.frombuffer(data, np.uint8).reshape(size, size) / 255.0


def test_viewer_plays_the_asset_offline_and_matches_the_rasterizer(browser, tmp_path):
    canonical = builtin_object(0)
    num_frames, size = 4, 96
    field = _moving_field(canonical, seed=3, scale=0.15)
    asset = Asset4D(field, canonical, MOTION, num_frames, 8.0)
    frames = [asset.at_frame(f) for f in range(num_frames)]
    videos = np.random.default_rng(0).integers(0, 255, (4, num_frames, 32, 32, 3), np.uint8)
    tracks = Tracks(np.random.default_rng(1).random((4, num_frames, 6, 2)) * 32,
                    np.ones((4, num_frames, 6), bool), "test")
    path = str(tmp_path / "viewer.html")
    nbytes = write_viewer(path, frames, fps=8.0, videos=videos, tracks=tracks,
                          prompt="a <b>test</b>")
    # Size budget (module docstring): 6 B per Gaussian per frame + 29 B + 3 B colour,
    # base64 x 4/3, plus the JPEG frames and the page itself.
    n = canonical.num_gaussians
    assert nbytes < (6 * n * num_frames + 32 * n) * 4 / 3 + 16 * 1024 * 4 * num_frames + 60_000
    page, errors, requests = open_page(browser, path)
    assert errors == []
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
    views = ring_views(4, elevation=15.0, size=size)
    renderer = ViewRenderer(size, size)
    ious = []
    for f in (0, num_frames - 1):
        shown = _coverage(page, views, 1, f, size) > 0.5
        ours = np.asarray(renderer(frames[f], views.viewmats[1:2], views.Ks[1:2]).alphas
                          ).reshape(size, size) > 0.5
        ious.append((shown & ours).sum() / (shown | ours).sum())
        if f == 0:
            first = shown
    # Measured 0.99: the page splats as the rasterizer does (3 sigma, 0.3 px dilation),
    # in float32 on another GPU path.
    assert min(ious) > 0.95, ious
    assert (first ^ shown).sum() > 0.02 * first.sum()     # the object moved between frames
    assert page.evaluate("document.title") == "t4a_jax 4D viewer"
    assert "a <b>test</b>" in page.inner_text("#info")   # shown as text, not markup
    page.click("button[data-tab=tracks]")
    assert page.is_visible("#tracks canvas")
    assert errors == []
    page.close()


# ----------------------------------------------------------------------------- tracks


def test_grid_queries_lie_on_the_mask_and_video_tracks_call_the_tracker_per_view():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 4:12, 2:10] = True
    masks[1, 8:10, 8:10] = True
    queries = grid_queries(masks, 4)
    assert queries.shape == (2, 16, 2)                 # view 0: 4 x 4 on its box
    for mask, points in zip(masks, queries):
        cells = np.floor(points).astype(int)
        assert mask[cells[:, 1], cells[:, 0]].all()

    class Shift:
        """A stand-in video tracker: every point moves 1 px right per frame."""
        name = "shift"
        calls = []

        def __call__(self, video, points):
            self.calls.append((video.shape, points.copy()))
            frames = np.arange(len(video))[:, None, None]
            return (points[None] + frames * np.array([1.0, 0.0]),
                    np.ones((len(video), len(points)), bool))

    video = np.zeros((2, 3, 16, 16, 3), np.uint8)
    tracker = Shift()
    tracks = video_tracks(tracker, video, masks, grid=4)
    assert tracks.tracker == "shift" and tracks.points.shape == (2, 3, 16, 2)
    assert [c[0] for c in tracker.calls] == [(3, 16, 16, 3)] * 2
    np.testing.assert_allclose(tracks.points[:, 2] - tracks.points[:, 0],
                               np.broadcast_to([2.0, 0.0], (2, 16, 2)))


def test_video_tracks_through_cotracker3_keep_the_pixel_convention(monkeypatch, tmp_path):
    """CoTracker3 (`tools.cotracker`) behind `video_tracks`, with the stand-in
    `cotracker` package of tests/fake_cotracker.py (queries in at -0.5, tracks back
    at +0.5; every point moves by SHIFT per frame)."""
    pytest.importorskip("torch")
    from fake_cotracker import SHIFT, install_fake_cotracker
    from tools.cotracker import CoTracker3

    fake_checkpoint = install_fake_cotracker(monkeypatch, tmp_path)
    masks = np.zeros((2, 32, 32), bool)
    masks[:, 8:24, 8:24] = True
    video = np.full((2, 4, 32, 32, 3), 128, np.uint8)
    tracks = video_tracks(CoTracker3(fake_checkpoint, "cpu"), video, masks, grid=3)
    assert tracks.tracker == "cotracker3"
    queries = grid_queries(masks, 3)
    expected = queries[:, None] + np.arange(4)[None, :, None, None] * SHIFT
    np.testing.assert_allclose(tracks.points, expected, atol=1e-5)
    assert tracks.visible.all()
