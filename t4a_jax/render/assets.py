"""Static assets as Gaussians: the built-in object, 3DGS `.ply` files and meshes.

    gaussians = load_asset("model.glb")       # or a 3DGS .ply, an .obj, "" (built-in)
    gaussians, frame = normalise(gaussians, radius=0.8, up="y")   # onto the camera orbit

`load_asset` decides by the file: a `.ply` whose vertices carry `f_dc_0` is a 3DGS file
(`ply.load_ply`); a `.ply` with faces, `.obj`, `.glb` or `.gltf` is a mesh
(`mesh.gaussians_from_mesh`: Gaussians at the vertices and on area-sampled triangle
points); the empty path is `builtin.builtin_object`.
"""

from __future__ import annotations

import dataclasses
import os

import jax.numpy as jnp
import numpy as np

from t4a_jax.render.builtin import builtin_object
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.mesh import gaussians_from_mesh
from t4a_jax.render.ply import load_ply

MESH_EXTENSIONS = (".obj", ".glb", ".gltf")  # and .ply files with faces


def _ply_elements(path: str) -> dict[str, tuple[int, list[str]]]:
    """{element name: (count, property names)} from the header of the PLY file `path`."""
    elements: dict[str, tuple[int, list[str]]] = {}
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (no 'ply' magic line)")
        current: list[str] = []
        for raw in f:
            words = raw.decode("ascii", errors="replace").split()
            if words == ["end_header"]:
                return elements
            if len(words) >= 3 and words[0] == "element":
                current = []
                try:
                    elements[words[1]] = (int(words[2]), current)
                except ValueError as e:
                    raise ValueError(f"{path}: bad PLY header line {raw!r}") from e
            elif len(words) >= 3 and words[0] == "property":
                current.append(words[-1])
    raise ValueError(f"{path}: PLY header has no end_header")


def load_asset(path: str, *, mesh_samples: int = 20000, seed: int = 0) -> Gaussians:
    """Gaussians of an asset: '' is `builtin_object(seed)`; a `.ply` whose vertices have
    `f_dc_0` is a 3DGS file (`load_ply`); a `.ply` with faces, `.obj`, `.glb` or `.gltf`
    is a mesh (`gaussians_from_mesh` with `mesh_samples` samples and `seed`).

    Raises:
      ValueError naming the file when it is missing, has another extension, or is a
      `.ply` with neither 3DGS properties nor faces (e.g. a point cloud).
    """
    if not path:
        return builtin_object(seed)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".ply":
        elements = _ply_elements(path)
        if "f_dc_0" in elements.get("vertex", (0, []))[1]:
            return load_ply(path)
        if elements.get("face", (0, []))[0] > 0:
            return gaussians_from_mesh(path, num_samples=mesh_samples, seed=seed)
        raise ValueError(f"{path}: a .ply with neither 3DGS vertex properties (f_dc_0) "
                         f"nor faces; elements: {sorted(elements)}")
    if ext in MESH_EXTENSIONS:
        return gaussians_from_mesh(path, num_samples=mesh_samples, seed=seed)
    raise ValueError(f"{path}: unknown asset type {ext!r} (expected a 3DGS .ply or a "
                     f"mesh: .ply with faces, {', '.join(MESH_EXTENSIONS)})")


def is_mesh(path: str) -> bool:
    """Whether `load_asset(path)` reads `path` as a mesh (not a 3DGS .ply)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".ply":
        return "f_dc_0" not in _ply_elements(path).get("vertex", (0, []))[1]
    return ext in MESH_EXTENSIONS


# (x, y, z) of a +y-up file -> (x, -z, y): +90 degrees about x; its quaternion (w, x, y, z).
_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_Y_UP_TO_Z_UP_QUAT = np.array([np.sqrt(0.5), np.sqrt(0.5), 0.0, 0.0])
UP_AXES = ("z", "y")


@dataclasses.dataclass(frozen=True)
class Normalisation:
    """The similarity that puts an asset on the camera orbit: `apply(p) = scale *
    (rotation @ p - centre)`, with `rotation` the identity for a +z-up asset and +90
    degrees about x for a +y-up one (glTF's convention); `invert` undoes it."""

    centre: tuple[float, float, float]
    scale: float
    up: str

    @property
    def rotation(self) -> np.ndarray:
        return _Y_UP_TO_Z_UP if self.up == "y" else np.eye(3)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * (np.asarray(points, np.float64) @ self.rotation.T
                             - np.asarray(self.centre))

    def invert(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float64) / self.scale + np.asarray(self.centre)
                ) @ self.rotation


def normalise(gaussians: Gaussians, *, radius: float, up: str = "z"
              ) -> tuple[Gaussians, Normalisation]:
    """`gaussians` turned +z up (`up`: the file's up axis), centred on their bounding
    box's centre and scaled so that the farthest centre lies `radius` from it; and the
    `Normalisation` that did it. Rotating SH of degree > 0 is not supported (ValueError)."""
    if up not in UP_AXES:
        raise ValueError(f"up={up!r}, expected one of {UP_AXES}")
    if not radius > 0:
        raise ValueError(f"radius={radius} must be > 0")
    if up != "z" and gaussians.sh_degree > 0:
        raise ValueError(f"up={up!r} rotates the asset, and rotating SH of degree "
                         f"{gaussians.sh_degree} is not supported: save it +z up")
    rotation = _Y_UP_TO_Z_UP if up == "y" else np.eye(3)
    means = np.asarray(gaussians.means, np.float64) @ rotation.T
    centre = (means.min(0) + means.max(0)) / 2
    extent = float(np.linalg.norm(means - centre, axis=-1).max())
    if not extent > 0:
        raise ValueError(f"the asset has no extent (its {len(means)} centres coincide)")
    frame = Normalisation(tuple(float(c) for c in centre), radius / extent, up)
    quats = np.asarray(gaussians.quats, np.float64)
    if up == "y":
        w0, v0 = _Y_UP_TO_Z_UP_QUAT[0], _Y_UP_TO_Z_UP_QUAT[1:]
        w, v = quats[:, :1], quats[:, 1:]
        quats = np.concatenate([w0 * w - v @ v0[:, None], w0 * v + w * v0 + np.cross(v0, v)],
                               axis=-1)
    dtype = gaussians.means.dtype
    return gaussians.replace(
        means=jnp.asarray(frame.apply(gaussians.means), dtype),
        quats=jnp.asarray(quats, dtype),
        log_scales=gaussians.log_scales + jnp.asarray(np.log(frame.scale), dtype)), frame
