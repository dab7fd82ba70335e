"""Initialising `Gaussians` from a triangle mesh (.obj, .glb/.gltf, mesh .ply, ...).

One Gaussian sits at every vertex of the mesh and `num_samples` more at points drawn
uniformly by area on its triangles. All are isotropic, unrotated and equally opaque; their
size follows the local edge length and their colour the mesh's texture, material colour,
vertex colours or face colours, whichever the mesh has first (else mid grey).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import trimesh
from PIL import Image

from t4a_jax.render.gaussians import Gaussians, logit, sh_from_rgb
from t4a_jax.render.sh import MAX_SH_DEGREE

_GREY = 0.5


def load_meshes(path: str) -> list[trimesh.Trimesh]:
    """The triangle meshes in the file with their scene transforms applied.

    Geometry without triangles of non-zero area (point clouds, lines, degenerate meshes) is
    skipped, as are vertices no face uses. The meshes are kept apart rather than merged by
    trimesh, whose texture packing (trimesh 5.2) corrupts textures that carry a
    baseColorFactor.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        scene = trimesh.load_scene(path)
    except Exception as e:  # trimesh's loaders raise all kinds of errors on bad input
        raise ValueError(f"{path}: cannot load as a mesh ({type(e).__name__}: {e})") from e
    meshes = [g for g in scene.dump()
              if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0 and g.area > 0.0]
    if not meshes:
        raise ValueError(f"{path}: no triangles with non-zero area (not a mesh, or an "
                         "unparsable file)")
    for mesh in meshes:
        mesh.remove_unreferenced_vertices()
    return meshes


def ray_visible(path: str, points: np.ndarray, centres: np.ndarray, *,
                tolerance: float = 1e-3) -> np.ndarray:
    """bool [V, N]: whether the segment from each camera centre [V, 3] to each point
    [N, 3] (points on or near the surface of the mesh in `path`) reaches the point
    before the mesh: the first triangle hit along the ray lies no nearer than the point
    minus `tolerance` times the scene's extent. Back-facing points fail (the ray meets
    the front side first), as do points behind other parts."""
    meshes = load_meshes(path)
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    mesh = trimesh.Trimesh(np.concatenate([m.vertices for m in meshes]),
                           np.concatenate([m.faces + o for m, o in zip(meshes, offsets)]),
                           process=False)          # geometry only: no texture merging
    extent = float(np.linalg.norm(mesh.extents))
    points = np.asarray(points, np.float64)
    visible = np.zeros((len(centres), len(points)), bool)
    for v, centre in enumerate(np.asarray(centres, np.float64)):
        offset = points - centre
        distance = np.linalg.norm(offset, axis=-1)
        directions = offset / distance[:, None]
        origins = np.broadcast_to(centre, points.shape)
        hits, rays, _ = mesh.ray.intersects_location(origins, directions, multiple_hits=False)
        first = np.full(len(points), np.inf)
        first[rays] = np.linalg.norm(hits - centre, axis=-1)
        visible[v] = first >= distance - tolerance * extent
    return visible


def _texture_image(visual: trimesh.visual.TextureVisuals) -> Image.Image | None:
    material = visual.material
    image = getattr(material, "baseColorTexture", None)  # PBRMaterial
    if image is None:
        image = getattr(material, "image", None)  # SimpleMaterial
    return image


def _sample_texture(image: Image.Image, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of RGB in [0, 1] at `uv` [M, 2] (OpenGL convention: v = 0 is the
    bottom row); coordinates outside [0, 1] wrap around (glTF's default REPEAT)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    h, w = pixels.shape[:2]
    uv = np.where((uv < 0.0) | (uv > 1.0), uv - np.floor(uv), uv)
    col = uv[:, 0] * (w - 1)
    row = (1.0 - uv[:, 1]) * (h - 1)
    c0 = np.clip(np.floor(col).astype(np.int64), 0, w - 1)
    r0 = np.clip(np.floor(row).astype(np.int64), 0, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    fc = (col - c0)[:, None]
    fr = (row - r0)[:, None]
    top = pixels[r0, c0] * (1.0 - fc) + pixels[r0, c1] * fc
    bottom = pixels[r1, c0] * (1.0 - fc) + pixels[r1, c1] * fc
    return top * (1.0 - fr) + bottom * fr


def _colours(mesh: trimesh.Trimesh, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] for the vertices, then the samples ([M] faces, [M, 3] barycentrics)."""
    visual = mesh.visual
    num_vertices = len(mesh.vertices)
    tri = mesh.faces[faces]

    def at_vertices_and_samples(per_vertex: np.ndarray) -> np.ndarray:
        samples = np.einsum("mk,mkc->mc", bary, per_vertex[tri])
        return np.concatenate([per_vertex, samples], axis=0)

    if isinstance(visual, trimesh.visual.TextureVisuals):
        image = _texture_image(visual)
        if image is not None and visual.uv is not None and len(visual.uv) == num_vertices:
            uv = at_vertices_and_samples(np.asarray(visual.uv, dtype=np.float64))
            return _sample_texture(image, uv)
        main = np.asarray(visual.material.main_color, dtype=np.float64)[:3] / 255.0
        return np.broadcast_to(main, (num_vertices + len(faces), 3))
    if visual.kind == "vertex":
        rgb = np.asarray(visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
        return at_vertices_and_samples(rgb)
    if visual.kind == "face":
        face_rgb = np.asarray(visual.face_colors, dtype=np.float64)[:, :3] / 255.0
        total = np.zeros((num_vertices, 3))
        count = np.zeros(num_vertices)
        np.add.at(total, mesh.faces, face_rgb[:, None, :])
        np.add.at(count, mesh.faces, 1.0)
        return np.concatenate([total / count[:, None], face_rgb[faces]], axis=0)
    return np.full((num_vertices + len(faces), 3), _GREY)


def _edge_lengths(mesh: trimesh.Trimesh, faces: np.ndarray) -> np.ndarray:
    """Mean incident edge length per vertex, then mean edge length of each sample's face.

    Zero lengths (a vertex of collapsed faces only) become the mesh's mean edge length.
    """
    num_vertices = len(mesh.vertices)
    edges = mesh.edges_unique
    lengths = mesh.edges_unique_length
    total = np.zeros(num_vertices)
    count = np.zeros(num_vertices)
    np.add.at(total, edges.ravel(), np.repeat(lengths, 2))
    np.add.at(count, edges.ravel(), 1.0)
    per_face = lengths[mesh.faces_unique_edges].mean(axis=1)
    local = np.concatenate([total / count, per_face[faces]])
    # A vertex whose edges all have zero length (collapsed faces) gets the mesh's mean.
    return np.where(local > 0.0, local, lengths[lengths > 0.0].mean())


def _surface_points(mesh: trimesh.Trimesh, faces: np.ndarray,
                    bary: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [V + M, 3], local edge lengths [V + M] and RGB [V + M, 3] of one mesh's
    vertices, then of its M samples on `faces` [M] at barycentrics `bary` [M, 3]."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    samples = np.einsum("mk,mkc->mc", bary, vertices[mesh.faces[faces]])
    positions = np.concatenate([vertices, samples], axis=0)
    return positions, _edge_lengths(mesh, faces), _colours(mesh, faces, bary)


def gaussians_from_mesh(path: str | os.PathLike, *, num_samples: int = 20000,
                        seed: int = 0, sh_degree: int = 0, opacity: float = 0.9,
                        scale_factor: float = 0.5,
                        max_size: float | None = None) -> Gaussians:
    """Gaussians covering the surface of the mesh in `path`.

    The file is loaded with trimesh (`.obj`, `.glb`/`.gltf`, `.ply` with faces, ...) as a
    scene whose meshes are placed by their node transforms; geometry without triangles
    of non-zero area and vertices that no face uses are dropped. With V vertices left,
    the result has N = V + num_samples Gaussians, in float32:

    - `means` [N, 3]: the V vertices (mesh by mesh, each in file order), then
      `num_samples` points drawn uniformly by area over all triangles (a triangle with
      probability proportional to its area, then uniform barycentric coordinates) with
      `numpy.random.default_rng(seed)`, so the same file and seed give the same result.
    - `log_scales` [N, 3]: isotropic, log(scale_factor * L) where L is the mean length of a
      vertex's incident edges in its mesh or the mean edge length of a sample's triangle
      (the mesh's mean edge length where that is zero); the scale is clamped to at most
      `max_size` when given.
    - `quats` [N, 4]: identity (1, 0, 0, 0) in (w, x, y, z).
    - `opacity_logits` [N]: logit(opacity).
    - `sh` [N, (sh_degree + 1)^2, 3]: `sh_from_rgb` of an RGB colour in [0, 1] (alpha
      dropped), taken from the first of: the base-colour texture image at the
      interpolated UV (bilinear, OpenGL convention: row = (1 - v) * (H - 1), column =
      u * (W - 1), UVs outside [0, 1] wrap; a material's base-colour factor is not
      applied), the material's main colour as trimesh reports it when there is no
      texture image or no UVs, the vertex
      colours (interpolated barycentrically for samples), the face colours (a vertex gets
      the mean of its faces'), or mid grey 0.5.

    Raises:
      ValueError, naming the file, when it is missing, cannot be loaded or has no
      triangles of non-zero area; ValueError when an argument is out of range.
    """
    path = os.fspath(path)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
    if not 0.0 < opacity < 1.0:
        raise ValueError(f"opacity must be in (0, 1), got {opacity}")
    if not scale_factor > 0.0:
        raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
    if max_size is not None and not max_size > 0.0:
        raise ValueError(f"max_size must be > 0, got {max_size}")

    meshes = load_meshes(path)
    areas = np.concatenate([m.area_faces for m in meshes])
    owner = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)])
    local_face = np.concatenate([np.arange(len(m.faces)) for m in meshes])

    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(areas)
    picked = np.searchsorted(cumulative, rng.random(num_samples) * cumulative[-1],
                             side="right")
    picked = np.minimum(picked, len(areas) - 1)  # guards against round-off at the top
    r1, r2 = rng.random((2, num_samples))
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)

    # Vertices go first, mesh by mesh; samples keep their drawing order.
    means, lengths, rgb = [], [], []
    sample_means = np.empty((num_samples, 3))
    sample_lengths = np.empty(num_samples)
    sample_rgb = np.empty((num_samples, 3))
    for i, mesh in enumerate(meshes):
        mine = owner[picked] == i
        mesh_means, mesh_lengths, mesh_rgb = _surface_points(
            mesh, local_face[picked[mine]], bary[mine])
        v = len(mesh.vertices)
        means.append(mesh_means[:v])
        lengths.append(mesh_lengths[:v])
        rgb.append(mesh_rgb[:v])
        sample_means[mine] = mesh_means[v:]
        sample_lengths[mine] = mesh_lengths[v:]
        sample_rgb[mine] = mesh_rgb[v:]
    means = np.concatenate(means + [sample_means])
    scales = scale_factor * np.concatenate(lengths + [sample_lengths])
    rgb = np.concatenate(rgb + [sample_rgb])
    if max_size is not None:
        scales = np.minimum(scales, max_size)
    n = means.shape[0]

    return Gaussians(
        means=jnp.asarray(means, dtype=jnp.float32),
        quats=jnp.asarray(np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (n, 1))),
        log_scales=jnp.asarray(np.repeat(np.log(scales)[:, None], 3, axis=1),
                               dtype=jnp.float32),
        opacity_logits=logit(jnp.full((n,), opacity, dtype=jnp.float32)),
        sh=sh_from_rgb(jnp.asarray(rgb, dtype=jnp.float32), sh_degree),
    )
