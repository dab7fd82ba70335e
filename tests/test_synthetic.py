"""Tests for the synthetic dataset (t4a_jax.data.synthetic, t4a_jax.data.procedural).

One tiny dataset (2 objects, 4 views, 6 frames, 128 px) is generated once per module and
checked for its layout, its cameras, its masks and, mostly, its exact tracks against
the decoded videos; the command line itself runs once on a smaller set.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from t4a_jax.config_files import CONFIGS_DIR, get_config
from t4a_jax.data import procedural, synthetic
from t4a_jax.data.tracks import grid_queries, load_tracks, queries_in_mask
from t4a_jax.render.cameras import intrinsics_from_fov, orbit_c2w
from t4a_jax.render.ply import load_ply
from t4a_jax.render.views import ViewSet
from t4a_jax.render.visibility import facing, front_transmittance, project_points
from t4a_jax.video import read_video

VIEWS, FRAMES, SIZE, OBJECTS = 4, 6, 128, 2
UIDS = [f"synth_{i:04d}" for i in range(OBJECTS)]
GREY = 0.498 * 255


def config(out, **overrides) -> ml_collections.ConfigDict:
    """configs/synthetic.py for `out` at this module's sizes, seed 3."""
    config = get_config("synthetic")
    config.update(dict(dict(out=str(out), views=VIEWS, frames=FRAMES, size=SIZE, seed=3),
                       **overrides))
    return config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synthetic") / "set"
    synthetic.run(config(out, objects=OBJECTS))
    return out


def video(out: pathlib.Path, uid: str, view: int) -> np.ndarray:
    """Decoded frames [F, H, W, 3] as floats in [0, 1]."""
    return read_video(out / "videos" / uid / "anim_0" / f"view_{view}.mp4") / 255.0


def mask(out: pathlib.Path, uid: str, view: int) -> np.ndarray:
    with np.load(out / "masks" / uid / "anim_0" / f"view_{view}.npz") as data:
        return data["mask"]


def bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """image [H, W, C] sampled at (x, y) [N, 2] (pixel centres at +0.5), edges clamped."""
    h, w, _ = image.shape
    x = np.clip(xy[:, 0] - 0.5, 0, w - 1.001)
    y = np.clip(xy[:, 1] - 0.5, 0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (image[y0, x0] * (1 - fx) * (1 - fy) + image[y0, x0 + 1] * fx * (1 - fy)
            + image[y0 + 1, x0] * (1 - fx) * fy + image[y0 + 1, x0 + 1] * fx * fy)


def all_files(out: pathlib.Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- layout


def test_layout_is_exactly_the_mv_video_one_plus_extras(dataset):
    expected = {"uid_info_dict.json", "synthetic_config.json"}
    for uid in UIDS:
        expected |= {f"videos/{uid}/anim_0/view_{i}.mp4" for i in range(VIEWS)}
        expected |= {f"masks/{uid}/anim_0/view_{i}.npz" for i in range(VIEWS)}
        expected |= {f"cameras/{uid}/anim_0.npz", f"static/{uid}.ply",
                     f"exact_tracks/{uid}/anim_0.npz"}
    assert all_files(dataset) == expected       # nothing missing, no temporary files left

    info = json.loads((dataset / "uid_info_dict.json").read_text())
    assert sorted(info) == UIDS
    for uid in UIDS:
        assert list(info[uid]) == ["anim_0"] and list(info[uid]["anim_0"]) == ["00"]
        entry = info[uid]["anim_0"]["00"]
        assert sorted(entry) == ["angle", "text_prompt"]
        assert sorted(entry["angle"]) == ["azi_start", "elv"]
        assert "creature" in entry["text_prompt"]
    assert info[UIDS[0]]["anim_0"]["00"] != info[UIDS[1]]["anim_0"]["00"]


def test_cameras_are_the_animate3d_orbit(dataset):
    info = json.loads((dataset / "uid_info_dict.json").read_text())
    for uid in UIDS:
        angle = info[uid]["anim_0"]["00"]["angle"]
        with np.load(dataset / "cameras" / uid / "anim_0.npz") as cams:
            c2w, k = cams["c2w"], cams["K"]
            assert float(cams["elevation"]) == pytest.approx(angle["elv"], abs=1e-4)
            assert float(cams["azimuth_start"]) == pytest.approx(angle["azi_start"], abs=1e-4)
            assert float(cams["distance"]) == 3.0 and float(cams["fovy"]) == 40.0
            np.testing.assert_array_equal(cams["views"], np.arange(VIEWS))
        assert c2w.shape == (VIEWS, 4, 4) and c2w.dtype == np.float32
        azimuths = angle["azi_start"] + 360.0 * np.arange(VIEWS) / VIEWS
        np.testing.assert_allclose(c2w, orbit_c2w(angle["elv"], azimuths, 3.0), atol=1e-5)
        np.testing.assert_allclose(k, intrinsics_from_fov(40.0, SIZE, SIZE), atol=1e-4)
        # Independently: positions at distance 3, one elevation, azimuths 360/V apart.
        position = c2w[:, :3, 3]
        np.testing.assert_allclose(np.linalg.norm(position, axis=1), 3.0, atol=1e-5)
        np.testing.assert_allclose(np.degrees(np.arcsin(position[:, 2] / 3.0)), angle["elv"],
                                   atol=1e-3)
        step = np.diff(np.degrees(np.arctan2(position[:, 1], position[:, 0]))) % 360.0
        np.testing.assert_allclose(step, 360.0 / VIEWS, atol=1e-3)


def test_static_ply_is_frame_zero(dataset):
    spec = synthetic.DatasetSpec(views=VIEWS, frames=FRAMES, size=SIZE, seed=3)
    for item in synthetic.plan(spec, OBJECTS, 1):
        creature = procedural.make_creature(item.creature_seed, spec.num_gaussians)
        static = load_ply(dataset / "static" / f"{item.uid}.ply")
        np.testing.assert_array_equal(static.means, creature.gaussians.means)
        np.testing.assert_array_equal(static.sh, creature.gaussians.sh)
        animation = procedural.make_animation(creature, item.animation_seed)
        at_zero = procedural.gaussian_transforms(creature, animation, np.zeros(1))
        np.testing.assert_allclose(at_zero.apply(np.asarray(static.means, np.float64))[0],
                                   static.means, atol=1e-7)


def test_masks_match_the_video_background(dataset):
    for uid in UIDS:
        for view in range(VIEWS):
            stored = mask(dataset, uid, view)
            assert stored.shape == (FRAMES, SIZE, SIZE) and stored.dtype == bool
            # Codec noise is a few levels; the palette keeps every colour far from grey.
            from_video = np.abs(video(dataset, uid, view) * 255 - GREY).max(axis=-1) > 20
            assert (stored == from_video).mean() > 0.97
            assert 0.03 < stored.mean() < 0.6             # an object, and background around


# ----------------------------------------------------------------------------- tracks


def test_track_file_covers_every_view_and_frame(dataset):
    for uid in UIDS:
        tracks = load_tracks(dataset / "exact_tracks" / uid / "anim_0.npz")
        assert tracks.tracker == "exact" and tracks.size == (SIZE, SIZE)
        assert tracks.tracks.shape == (VIEWS, FRAMES, 225, 2)
        np.testing.assert_array_equal(tracks.views, np.arange(VIEWS))
        np.testing.assert_array_equal(tracks.frames, np.arange(FRAMES))
        np.testing.assert_array_equal(tracks.queries[0], grid_queries(SIZE, SIZE))
        first_masks = np.stack([mask(dataset, uid, v)[0] for v in range(VIEWS)])
        np.testing.assert_array_equal(tracks.valid, queries_in_mask(tracks.queries,
                                                                    first_masks))
        assert tracks.valid.sum() > 10 * VIEWS
        valid = tracks.valid
        np.testing.assert_allclose(tracks.tracks[:, 0][valid], tracks.queries[valid],
                                   atol=1e-3)
        # Nearly all queries are seen at frame 0 (a few sit on mixed silhouette pixels).
        assert tracks.visibility[:, 0][valid].mean() > 0.9


def colour_changes(out: pathlib.Path, uid: str):
    """Per visible (view, frame > 0, point): the colour change along the exact track,
    the change at the frozen query position for points that moved by > 2 px, and the
    colour differences between pairs of different points at frame 0."""
    tracks = load_tracks(out / "exact_tracks" / uid / "anim_0.npz")
    along, frozen, pairs = [], [], []
    for v in range(VIEWS):
        frames = video(out, uid, v)
        start = bilinear(frames[0], tracks.queries[v])
        ok = tracks.valid[v]
        pairs.append(np.abs(start[ok][:, None] - start[ok][None]).max(-1)[
            np.triu_indices(int(ok.sum()), 1)])
        for f in range(1, FRAMES):
            seen = tracks.visibility[v, f] & tracks.visibility[v, 0]
            moved = np.linalg.norm(tracks.tracks[v, f] - tracks.queries[v], axis=-1) > 2.0
            along.append(np.abs(bilinear(frames[f], tracks.tracks[v, f]) - start).max(-1)[seen])
            frozen.append(np.abs(bilinear(frames[f], tracks.queries[v]) - start).max(-1)[
                seen & moved])
    return np.concatenate(along), np.concatenate(frozen), np.concatenate(pairs)


def test_exact_tracks_follow_the_surface(dataset):
    """The colour under a visible tracked point stays the same over frames.

    Tolerances, in max-over-RGB units of [0, 1]: H.264 at crf 18 changes colours by
    ~0.01, and when a part turns relative to the camera its Gaussians' footprints (about
    a pixel at 128 px) blend differently with their neighbours, which matters at
    texture edges, so a point's colour drifts a little; the median stays under 0.08.
    The same colours sampled at the query position (a tracker that does not move) or
    at another point differ several times more: the test fails for wrong tracks and
    for a flat texture.
    """
    along, frozen, pairs = (np.concatenate(x) for x in
                            zip(*(colour_changes(dataset, uid) for uid in UIDS)))
    assert len(along) > 200 and len(frozen) > 50
    assert np.median(along) < 0.08
    assert np.mean(along < 0.2) > 0.85
    assert np.median(frozen) > 2.5 * np.median(along)
    assert np.median(pairs) > 0.2


def test_visible_points_are_on_the_mask_and_tracks_move(dataset):
    for uid in UIDS:
        tracks = load_tracks(dataset / "exact_tracks" / uid / "anim_0.npz")
        for v in range(VIEWS):
            masks = mask(dataset, uid, v)
            for f in range(FRAMES):
                seen = tracks.visibility[v, f]
                cols = np.floor(tracks.tracks[v, f, seen, 0]).astype(int)
                rows = np.floor(tracks.tracks[v, f, seen, 1]).astype(int)
                assert masks[f][rows, cols].all()
        travel = np.linalg.norm(tracks.tracks - tracks.queries[:, None], axis=-1).max(axis=1)
        travel = travel[tracks.valid]
        assert np.percentile(travel, 90) > 3.0 and travel.max() > 6.0


@pytest.fixture(scope="module")
def scene():
    """Object 0 of the dataset, its cameras, and its rest pose rendered from them."""
    spec = synthetic.DatasetSpec(views=VIEWS, frames=FRAMES, size=SIZE, seed=3)
    item = synthetic.plan(spec, 1, 1)[0]
    creature = procedural.make_creature(item.creature_seed, spec.num_gaussians)
    animation = procedural.make_animation(creature, item.animation_seed)
    cameras = synthetic.item_views(item, spec)
    render = synthetic.make_renderer(SIZE)(creature.gaussians, cameras.viewmats, cameras.Ks)
    return creature, animation, cameras, render


def _transmittance(gaussians, cameras: ViewSet, xy, depth):
    return front_transmittance(gaussians, cameras.viewmats, cameras.Ks, SIZE, SIZE, xy, depth,
                               margin=synthetic.OCCLUSION_MARGIN)


def test_points_on_the_far_side_are_invisible(scene):
    """Body points attached in one view, facing it, and looked at from the opposite
    view are behind the body: the occlusion test alone and the facing test alone must
    each mark them invisible, and the expected depth rendered in the opposite view
    confirms that something lies in front of them."""
    creature, animation, cameras, render = scene
    grid = grid_queries(SIZE, SIZE, grid=40)
    queries = np.broadcast_to(grid, (VIEWS,) + grid.shape).copy()
    valid = queries_in_mask(queries, render.alphas > synthetic.MASK_THRESHOLD)
    attachment = synthetic.attach_queries(creature.gaussians, cameras, SIZE, queries, valid)
    transforms = procedural.gaussian_transforms(creature, animation, np.zeros(1))
    points, normals = synthetic.track_points(creature, transforms, attachment)
    points, normals = points[0], normals[0]                         # [V, N, 3] at frame 0
    chosen = (valid & (creature.part[attachment.gaussian] == 0)
              & (facing(points, normals, cameras.c2w[:, :3, 3]) > 0.5))
    first = int(np.argmax(chosen.sum(axis=1)))                      # a side view
    chosen = chosen[first]
    assert chosen.sum() >= 20

    # Where they were attached, they are visible.
    xy, depth = project_points(points, cameras.viewmats, cameras.Ks)
    visible = synthetic.visibility(
        xy, facing(points, normals, cameras.c2w[:, :3, 3]),
        _transmittance(creature.gaussians, cameras, xy, depth),
        render.alphas)
    assert visible[first, chosen].mean() > 0.9

    opposite = (first + VIEWS // 2) % VIEWS
    other = ViewSet(*(x[opposite:opposite + 1] for x in cameras))
    mine, my_normals = points[first:first + 1], normals[first:first + 1]
    xy, depth = project_points(mine, other.viewmats, other.Ks)
    transmittance = _transmittance(creature.gaussians, other, xy, depth)
    cosine = facing(mine, my_normals, other.c2w[:, :3, 3])
    alphas = render.alphas[opposite:opposite + 1]
    occlusion_only = synthetic.visibility(xy, cosine, transmittance, alphas, min_facing=-1.0)
    facing_only = synthetic.visibility(xy, cosine, np.ones_like(transmittance), alphas)
    assert not occlusion_only[0, chosen].any()
    assert not facing_only[0, chosen].any()
    cols, rows = np.floor(xy[0, chosen]).astype(int).T
    assert (depth[0, chosen] > render.depths[opposite, rows, cols] + 0.1).all()


def test_attached_points_ride_their_gaussian_exactly():
    creature = procedural.make_creature(5, 2048)
    animation = procedural.make_animation(creature, 6)
    transforms = procedural.gaussian_transforms(creature, animation, np.arange(12) / 12)
    means = np.asarray(creature.gaussians.means, np.float64)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(means), size=(1, 50))
    offset = rng.normal(scale=0.01, size=(1, 50, 3))
    attachment = synthetic.Attachment(ids, means[ids] + offset)
    points, normals = synthetic.track_points(creature, transforms, attachment)
    posed = np.stack([np.asarray(procedural.pose_gaussians(
        creature.gaussians, procedural.Similarity(*(x[t] for x in transforms))).means)
        for t in range(12)])
    # The point keeps its offset from its Gaussian, rotated and scaled with it.
    relative = points[:, 0] - posed[:, ids[0]]
    expected = transforms.scale[:, ids[0], None] * np.einsum(
        "tnij,nj->tni", transforms.rotation[:, ids[0]], offset[0])
    np.testing.assert_allclose(relative, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-6)
    assert np.abs(posed - posed[:1]).max() > 0.05            # the creature moves


# ----------------------------------------------------------------------------- procedural


def test_creatures_are_seeded_and_stay_in_frame():
    a, b = procedural.make_creature(7), procedural.make_creature(7)
    np.testing.assert_array_equal(a.gaussians.means, b.gaussians.means)
    np.testing.assert_array_equal(a.gaussians.sh, b.gaussians.sh)
    assert a.gaussians.num_gaussians == 4096
    other = procedural.make_creature(8)
    assert not np.array_equal(np.asarray(a.gaussians.sh), np.asarray(other.gaussians.sh))
    for seed in range(4):
        creature = procedural.make_creature(seed, 1024)
        animation = procedural.make_animation(creature, [seed, 1])
        assert procedural.max_radius(creature, animation) <= procedural.FIT_RADIUS
        text = procedural.prompt(creature, animation)
        assert creature.colour in text and creature.pattern in text
        assert {2: "two", 4: "four", 6: "six"}[creature.num_legs] in text
        assert ("tail" in text) == creature.has_tail
        at_zero = procedural.gaussian_transforms(creature, animation, np.zeros(1))
        np.testing.assert_allclose(at_zero.scale, 1.0)
        np.testing.assert_allclose(at_zero.rotation, np.broadcast_to(np.eye(3), (1, 1024, 3, 3)),
                                   atol=1e-12)
    with pytest.raises(ValueError, match="num_gaussians"):
        procedural.make_creature(0, 100)


def test_quaternions_match_rotations():
    rng = np.random.default_rng(0)
    axis = rng.normal(size=(64, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = rng.uniform(-np.pi, np.pi, size=64)
    rotation = procedural.rotation_matrix(axis, angle)
    np.testing.assert_allclose(rotation @ np.swapaxes(rotation, 1, 2),
                               np.broadcast_to(np.eye(3), (64, 3, 3)), atol=1e-12)
    q = procedural.quat_from_rotation(rotation)
    w = np.cos(angle / 2)[:, None]
    expected = np.concatenate([w, np.sin(angle / 2)[:, None] * axis], axis=1)
    expected *= np.sign(w)
    np.testing.assert_allclose(q, expected, atol=1e-9)


def test_plan_gives_each_animation_its_own_motion_and_cameras():
    spec = synthetic.DatasetSpec(seed=1)
    items = synthetic.plan(spec, 2, 2)
    assert [(i.uid, i.anim) for i in items] == [
        ("synth_0000", "anim_0"), ("synth_0000", "anim_1"),
        ("synth_0001", "anim_0"), ("synth_0001", "anim_1")]
    assert items[0].creature_seed == items[1].creature_seed != items[2].creature_seed
    assert len({i.animation_seed for i in items}) == 4
    assert len({(i.elevation, i.azimuth_start) for i in items}) == 4
    assert all(0.0 <= i.elevation <= 30.0 and 0.0 <= i.azimuth_start < 360.0 for i in items)
    assert synthetic.plan(spec, 1, 2) == items[:2]        # later objects change nothing


# ----------------------------------------------------------------------------- runs


def test_same_seed_same_files_and_reruns_skip(dataset, tmp_path):
    """A one-object dataset with the same seed equals object 0 of the fixture (arrays,
    decoded frames, ply bytes); rerunning skips complete items and redoes broken ones."""
    out = tmp_path / "again"
    synthetic.run(config(out, objects=1))
    uid = UIDS[0]
    for name in sorted(all_files(out)):
        if name.endswith(".npz"):
            with np.load(out / name) as mine, np.load(dataset / name) as theirs:
                assert mine.files == theirs.files
                for key in mine.files:
                    np.testing.assert_array_equal(mine[key], theirs[key], err_msg=name)
        elif name.endswith(".mp4"):
            view = int(name.rsplit("_", 1)[1].split(".")[0])
            np.testing.assert_array_equal(video(out, uid, view), video(dataset, uid, view))
        elif name.endswith(".ply") or name == "synthetic_config.json":
            assert (out / name).read_bytes() == (dataset / name).read_bytes()
    info = json.loads((out / "uid_info_dict.json").read_text())
    assert info == {uid: json.loads((dataset / "uid_info_dict.json").read_text())[uid]}

    stamps = {name: os.stat(out / name).st_mtime_ns for name in all_files(out)}
    assert "0 items generated, 1 skipped" in synthetic.run(config(out, objects=1))
    for name, stamp in stamps.items():
        if name != "uid_info_dict.json":
            assert os.stat(out / name).st_mtime_ns == stamp, name

    os.remove(out / "masks" / uid / "anim_0" / "view_1.npz")
    assert "1 items generated, 0 skipped" in synthetic.run(config(out, objects=1))
    assert all_files(out) == set(stamps)


def test_bad_arguments_are_refused(dataset, tmp_path):
    bad = get_config("synthetic")
    bad.update(dict(out=str(tmp_path / "x"), views=0))
    with pytest.raises(ValueError, match="views must be >= 1") as error:
        synthetic.run(bad)
    assert "config.views" in str(error.value)
    with pytest.raises(ValueError, match="config.out"):
        synthetic.run(get_config("synthetic"))
    # The fixture was made at 128 px: resuming it at 64 px would mix two datasets.
    with pytest.raises(ValueError) as error:
        synthetic.run(config(dataset, objects=1, size=64))
    err = str(error.value)
    assert "synthetic_config.json" in err and "size=128" in err


def test_command_line(tmp_path):
    """`python -m t4a_jax.data.synthetic --config=... --config.key=value` writes a set."""
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "t4a_jax.data.synthetic",
         f"--config={os.path.join(CONFIGS_DIR, 'synthetic.py')}:tiny", f"--config.out={out}",
         "--config.views=4", "--config.frames=2", "--config.size=32"],
        capture_output=True, text=True, timeout=300,
        cwd=os.path.dirname(CONFIGS_DIR), env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{out}: 1 items generated, 0 skipped" in result.stdout
    assert json.loads((out / synthetic.CONFIG_FILE).read_text())["size"] == 32
    tracks = load_tracks(out / "exact_tracks" / UIDS[0] / "anim_0.npz")
    assert tracks.tracks.shape == (4, 2, 225, 2)
