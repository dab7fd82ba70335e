"""Static assets as Gaussians: the built-in object, 3DGS `.ply` files and meshes.

    gaussians = load_asset("model.glb")       # or a 3DGS .ply, an .obj, "" (built-in)

`load_asset` decides by the file: a `.ply` whose vertices carry `f_dc_0` is a 3DGS file
(`ply.load_ply`); a `.ply` with faces, `.obj`, `.glb` or `.gltf` is a mesh
(`mesh.gaussians_from_mesh`: Gaussians at the vertices and on area-sampled triangle
points); the empty path is `builtin.builtin_object`.
"""

from __future__ import annotations

import os

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
