"""Tests for Gaussians initialised from a triangle mesh (t4a_jax.render.mesh)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from t4a_jax.render.gaussians import rgb_from_sh_dc
from t4a_jax.render.mesh import gaussians_from_mesh

RED = (255, 0, 0, 255)
BLUE = (0, 0, 255, 255)
NUM_SAMPLES = 600


def coloured_sphere() -> trimesh.Trimesh:
    """Icosphere of radius 1, vertices red where x > 0 and blue elsewhere."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
    sphere.visual.vertex_colors = np.where(sphere.vertices[:, :1] > 0, RED, BLUE)
    return sphere


def quad(image: np.ndarray) -> trimesh.Trimesh:
    """The square [-1, 1]^2 at z = 0 with uv = ((x + 1) / 2, (y + 1) / 2) and `image`."""
    vertices = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
    uv = (vertices[:, :2] + 1.0) / 2.0
    visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(image))
    return trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], visual=visual, process=False)


def halves_image(left, right, *, vertical: bool = False) -> np.ndarray:
    """An 8x16 RGB image whose left/right (or top/bottom if `vertical`) halves differ."""
    image = np.zeros((8, 16, 3), np.uint8)
    if vertical:
        image[:4], image[4:] = left, right
    else:
        image[:, :8], image[:, 8:] = left, right
    return image


def distance_to_surface(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Exact distance from each point to the nearest triangle (brute force, small meshes)."""
    n, f = len(points), len(mesh.faces)
    triangles = np.repeat(mesh.triangles[None], n, axis=0).reshape(n * f, 3, 3)
    queries = np.repeat(points, f, axis=0)
    closest = trimesh.triangles.closest_point(triangles, queries)
    return np.linalg.norm(closest - queries, axis=1).reshape(n, f).min(axis=1)


def rgb(g) -> np.ndarray:
    return np.asarray(rgb_from_sh_dc(g.sh))


def assert_colour(actual: np.ndarray, expected) -> None:
    """All rows of `actual` [M, 3] equal `expected` (broadcast), and there is a row."""
    assert len(actual) > 0
    np.testing.assert_allclose(actual, np.broadcast_to(expected, actual.shape), atol=1e-5)


@pytest.fixture(scope="module")
def sphere_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("sphere")
    sphere = coloured_sphere()
    paths = {}
    for ext in ("ply", "obj"):
        paths[ext] = directory / f"sphere.{ext}"
        sphere.export(paths[ext])
    return sphere, paths


@pytest.mark.parametrize("ext", ["ply", "obj"])
def test_sphere_positions_and_colours(sphere_files, ext):
    sphere, paths = sphere_files
    g = gaussians_from_mesh(paths[ext], num_samples=NUM_SAMPLES, seed=1)
    v = len(sphere.vertices)
    means = np.asarray(g.means)
    assert g.num_gaussians == v + NUM_SAMPLES
    assert means.dtype == np.float32
    # the first V Gaussians are the vertices, in order
    np.testing.assert_allclose(means[:v], sphere.vertices, atol=1e-6)
    # every centre lies on a triangle; the samples are spread over the whole sphere
    assert distance_to_surface(sphere, means).max() < 1e-5
    samples = means[v:]
    assert np.all(np.abs(samples.mean(axis=0)) < 0.15)
    assert np.all(np.linalg.norm(samples, axis=1) < 1.0 + 1e-6)

    colours = rgb(g)
    np.testing.assert_allclose(colours[:v], np.where(sphere.vertices[:, :1] > 0,
                                                     [1.0, 0, 0], [0, 0, 1.0]))
    # samples interpolate red and blue: no green, red + blue = 1, pure far from x = 0
    np.testing.assert_allclose(colours[:, 1], 0.0)
    np.testing.assert_allclose(colours[:, 0] + colours[:, 2], 1.0)
    x = samples[:, 0]
    assert (x > 0.4).sum() > 50 and (x < -0.4).sum() > 50
    assert_colour(colours[v:][x > 0.4], [1.0, 0, 0])
    assert_colour(colours[v:][x < -0.4], [0, 0, 1.0])
    mixed = colours[v:][np.abs(x) < 0.05, 0]
    assert np.any((mixed > 0.05) & (mixed < 0.95))


def test_rotations_opacity_and_sh_degree(sphere_files):
    _, paths = sphere_files
    g = gaussians_from_mesh(paths["ply"], num_samples=50, sh_degree=2, opacity=0.7)
    n = g.num_gaussians
    np.testing.assert_array_equal(np.asarray(g.quats), np.tile([1.0, 0, 0, 0], (n, 1)))
    np.testing.assert_allclose(np.asarray(g.opacities), 0.7, rtol=1e-6)
    assert g.sh.shape == (n, 9, 3)
    np.testing.assert_array_equal(np.asarray(g.sh)[:, 1:], 0.0)


def test_scales_follow_edge_lengths_and_mesh_size(tmp_path):
    sphere = coloured_sphere()
    sphere.export(tmp_path / "small.ply")
    sphere.apply_scale(2.0)
    sphere.export(tmp_path / "big.ply")
    small = gaussians_from_mesh(tmp_path / "small.ply", num_samples=NUM_SAMPLES)
    big = gaussians_from_mesh(tmp_path / "big.ply", num_samples=NUM_SAMPLES)
    s_small, s_big = np.asarray(small.scales), np.asarray(big.scales)
    for s in (s_small, s_big):
        assert np.all(np.isfinite(s)) and np.all(s > 0)
        np.testing.assert_array_equal(s[:, 0], s[:, 1])  # isotropic
        np.testing.assert_array_equal(s[:, 0], s[:, 2])
    np.testing.assert_allclose(s_big, 2.0 * s_small, rtol=1e-4)

    # scale_factor * mean incident edge length at a vertex
    unscaled = coloured_sphere()
    lengths = unscaled.edges_unique_length
    v0 = unscaled.edges_unique[:, 0] == 0
    v0 |= unscaled.edges_unique[:, 1] == 0
    np.testing.assert_allclose(s_small[0, 0], 0.5 * lengths[v0].mean(), rtol=1e-5)
    assert 0.5 * lengths.min() - 1e-6 <= s_small[:, 0].min()
    assert s_small[:, 0].max() <= 0.5 * lengths.max() + 1e-6

    clamped = gaussians_from_mesh(tmp_path / "big.ply", num_samples=NUM_SAMPLES,
                                  max_size=0.1, scale_factor=1.0)
    assert np.asarray(clamped.scales).max() <= 0.1 + 1e-7
    assert s_big.min() > 0.1  # so the clamp did act everywhere
    np.testing.assert_allclose(np.asarray(clamped.scales), 0.1, rtol=1e-6)


def test_samples_are_uniform_by_area(tmp_path):
    """Two squares, sides 1 and 2: 1/5 and 4/5 of the samples, uniform within each."""
    unit = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], float)
    vertices = np.concatenate([unit, 2.0 * unit + [5.0, 0, 0]])
    faces = [[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]]
    path = tmp_path / "squares.ply"
    trimesh.Trimesh(vertices, faces).export(path)
    n = 4000
    samples = np.asarray(gaussians_from_mesh(path, num_samples=n, seed=5).means)[8:]
    small = samples[:, 0] < 2.0
    assert abs(small.mean() - 0.2) < 0.03
    for square, origin, side in ((samples[small], 0.0, 1.0),
                                 (samples[~small], 5.0, 2.0)):
        u = (square[:, 0] - origin) / side
        w = square[:, 1] / side
        assert np.all((u >= -1e-6) & (u <= 1 + 1e-6) & (w >= -1e-6) & (w <= 1 + 1e-6))
        quadrants = np.bincount(2 * (u > 0.5) + (w > 0.5), minlength=4) / len(square)
        np.testing.assert_allclose(quadrants, 0.25, atol=0.06)


def test_deterministic_for_a_seed(sphere_files):
    _, paths = sphere_files
    a = gaussians_from_mesh(paths["obj"], num_samples=200, seed=3)
    b = gaussians_from_mesh(paths["obj"], num_samples=200, seed=3)
    c = gaussians_from_mesh(paths["obj"], num_samples=200, seed=4)
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)),
                                      np.asarray(getattr(b, name)))
    assert not np.array_equal(np.asarray(a.means), np.asarray(c.means))


def test_texture_colours_from_glb(tmp_path):
    path = tmp_path / "quad.glb"
    quad(halves_image(RED[:3], BLUE[:3])).export(path)
    g = gaussians_from_mesh(path, num_samples=NUM_SAMPLES, seed=0)
    assert g.num_gaussians == 4 + NUM_SAMPLES
    means, colours = np.asarray(g.means), rgb(g)
    np.testing.assert_allclose(means[:, 2], 0.0, atol=1e-7)
    assert np.all(np.abs(means[:, :2]) <= 1.0 + 1e-6)
    x = means[:, 0]
    assert (x < -0.1).sum() > 100 and (x > 0.1).sum() > 100
    assert_colour(colours[x < -0.1], [1.0, 0, 0])
    assert_colour(colours[x > 0.1], [0, 0, 1.0])


def test_texture_v_is_flipped(tmp_path):
    """Image row 0 is the top: v = 1 (y = 1 on the quad) reads the first rows."""
    green, black = (0, 255, 0), (0, 0, 0)
    path = tmp_path / "quad.glb"
    quad(halves_image(green, black, vertical=True)).export(path)
    g = gaussians_from_mesh(path, num_samples=NUM_SAMPLES)
    y, colours = np.asarray(g.means)[:, 1], rgb(g)
    assert_colour(colours[y > 0.2], [0, 1.0, 0])
    assert_colour(colours[y < -0.2], [0, 0, 0])


def test_scene_is_merged_with_transforms(tmp_path):
    scene = trimesh.Scene()
    scene.add_geometry(quad(halves_image(RED[:3], RED[:3])), node_name="a")
    scene.add_geometry(quad(halves_image(BLUE[:3], BLUE[:3])), node_name="b",
                       transform=trimesh.transformations.translation_matrix([0, 0, 5]))
    path = tmp_path / "scene.glb"
    scene.export(path)
    g = gaussians_from_mesh(path, num_samples=NUM_SAMPLES)
    assert g.num_gaussians == 8 + NUM_SAMPLES
    z, colours = np.asarray(g.means)[:, 2], rgb(g)
    assert set(np.round(z, 5)) == {0.0, 5.0}
    assert_colour(colours[z < 1], [1.0, 0, 0])
    assert_colour(colours[z > 4], [0, 0, 1.0])


def test_face_colours(tmp_path):
    q = trimesh.Trimesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]],
                        [[0, 1, 2], [0, 2, 3]], process=False)
    q.visual.face_colors = [RED, BLUE]  # face 0 is below the diagonal y = x
    path = tmp_path / "faces.ply"
    q.export(path)
    g = gaussians_from_mesh(path, num_samples=200)
    means, colours = np.asarray(g.means), rgb(g)
    below = means[4:, 1] < means[4:, 0]
    assert_colour(colours[4:][below], [1.0, 0, 0])
    assert_colour(colours[4:][~below], [0, 0, 1.0])
    # vertices 1 and 3 touch one face each, 0 and 2 both
    np.testing.assert_allclose(colours[:4], [[0.5, 0, 0.5], [1, 0, 0], [0.5, 0, 0.5],
                                             [0, 0, 1]])


def test_material_colour_without_texture(tmp_path):
    (tmp_path / "red.mtl").write_text("newmtl red\nKd 1 0 0\n")
    path = tmp_path / "tri.obj"
    path.write_text("mtllib red.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nusemtl red\nf 1 2 3\n")
    g = gaussians_from_mesh(path, num_samples=10)
    assert g.num_gaussians == 13
    assert_colour(rgb(g), [1.0, 0, 0])


def test_uncoloured_mesh_is_grey(tmp_path):
    path = tmp_path / "box.obj"
    trimesh.creation.box().export(path)
    g = gaussians_from_mesh(path, num_samples=20)
    np.testing.assert_allclose(rgb(g), 0.5, atol=1e-6)


def test_missing_file_raises(tmp_path):
    with pytest.raises(ValueError, match="nothing.obj"):
        gaussians_from_mesh(tmp_path / "nothing.obj")


def test_point_cloud_raises(tmp_path):
    path = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).normal(size=(30, 3))).export(path)
    with pytest.raises(ValueError, match="cloud.ply"):
        gaussians_from_mesh(path)


def test_unparsable_file_raises(tmp_path):
    path = tmp_path / "broken.glb"
    path.write_bytes(b"glTF but not really\x00\x01\x02")
    with pytest.raises(ValueError, match="broken.glb"):
        gaussians_from_mesh(path)
