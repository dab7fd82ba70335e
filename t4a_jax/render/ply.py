"""Reading and writing `Gaussians` in the INRIA 3D Gaussian Splatting `.ply` layout.

The file holds one binary little-endian `vertex` element with one float32 property per
scalar, in this order (N rows, K = (degree + 1)^2 SH bases):

    x y z                       means
    nx ny nz                    normals, always zero (unused, kept for compatibility)
    f_dc_0 f_dc_1 f_dc_2        sh[:, 0, :] (the DC term, RGB)
    f_rest_0 .. f_rest_{3(K-1)-1}
                                sh[:, 1:, :] stored channel-major: transposed to
                                [N, 3, K-1] and flattened, so f_rest_0..f_rest_{K-2} are the
                                red channel's bases 1..K-1, then green, then blue
    opacity                     opacity logit
    scale_0 scale_1 scale_2     log scales
    rot_0 rot_1 rot_2 rot_3     quaternion (w, x, y, z) as stored, not normalised

Values are copied, not converted, so a save/load round trip is bit-exact.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import plyfile

from t4a_jax.atomic import atomic_write
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.sh import MAX_SH_DEGREE


class PlyFormatError(ValueError):
    """A `.ply` file that cannot be read as 3D Gaussians."""


def _rest_names(num_rest: int) -> list[str]:
    return [f"f_rest_{i}" for i in range(num_rest)]


def _property_names(num_bases: int) -> list[str]:
    """The property names, in file order, for `num_bases` SH bases."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + _rest_names(3 * (num_bases - 1))
            + ["opacity", "scale_0", "scale_1", "scale_2",
               "rot_0", "rot_1", "rot_2", "rot_3"])


def _as_f32(x: object) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def save_ply(path: str | os.PathLike, gaussians: Gaussians) -> None:
    """Write `gaussians` to `path` in the 3DGS layout described in the module docstring.

    The file is written to a temporary file in the same directory and moved into place
    with `os.replace`, so `path` is either left untouched or holds the complete file.
    Raises `ValueError` when `gaussians.sh` does not have (degree + 1)^2 bases, degree 0..3.
    """
    path = os.fspath(path)
    means = _as_f32(gaussians.means)
    n = means.shape[0]
    sh = _as_f32(gaussians.sh)
    num_bases = sh.shape[1]
    if num_bases not in [(d + 1) ** 2 for d in range(MAX_SH_DEGREE + 1)]:
        raise ValueError(f"{path}: {num_bases} SH bases is not (degree + 1)^2 for a "
                         f"degree in 0..{MAX_SH_DEGREE}")
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (num_bases - 1))
    columns = np.concatenate([
        means,
        np.zeros((n, 3), np.float32),
        sh[:, 0, :],
        rest,
        _as_f32(gaussians.opacity_logits).reshape(n, 1),
        _as_f32(gaussians.log_scales),
        _as_f32(gaussians.quats),
    ], axis=1)
    names = _property_names(num_bases)
    records = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        records[name] = columns[:, i]
    data = plyfile.PlyData([plyfile.PlyElement.describe(records, "vertex")],
                           text=False, byte_order="<")

    with atomic_write(path) as f:
        data.write(f)


def load_ply(path: str | os.PathLike) -> Gaussians:
    """Read Gaussians from a 3DGS `.ply` file (layout in the module docstring).

    The SH degree (0..3) is inferred from the number of `f_rest_*` properties, which must be
    3 * ((degree + 1)^2 - 1). Properties are matched by name, so their order in the file
    does not matter, and any value type is cast to float32. Properties other than the
    required ones (the zero normals nx/ny/nz, or anything else a tool added) are ignored,
    as are elements other than `vertex`. Non-finite values are returned as they are.

    Raises:
      PlyFormatError (a `ValueError`), with a message naming the file, when the file is
      missing, is not a parsable PLY (e.g. truncated), has no `vertex` element, lacks
      required properties (listed by name), or has an `f_rest` count that matches no SH
      degree.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PlyFormatError(f"{path}: no such file")
    try:
        data = plyfile.PlyData.read(path, mmap=False)
    except (plyfile.PlyParseError, ValueError, TypeError, IndexError, KeyError,
            EOFError) as e:
        raise PlyFormatError(f"{path}: not a readable PLY file ({e})") from e

    if "vertex" not in data:
        found = [el.name for el in data.elements]
        raise PlyFormatError(f"{path}: no 'vertex' element (found {found})")
    vertex = data["vertex"]
    present = {prop.name for prop in vertex.properties}

    num_rest = sum(1 for name in present if name.startswith("f_rest_"))
    degrees = [d for d in range(MAX_SH_DEGREE + 1) if 3 * ((d + 1) ** 2 - 1) == num_rest]
    required = [name for name in _property_names(1) if name not in ("nx", "ny", "nz")]
    missing = sorted(set(required + _rest_names(num_rest)) - present)
    if missing:
        raise PlyFormatError(f"{path}: missing properties {missing}")
    if not degrees:
        valid = [3 * ((d + 1) ** 2 - 1) for d in range(MAX_SH_DEGREE + 1)]
        raise PlyFormatError(
            f"{path}: {num_rest} f_rest properties match no SH degree (expected one of "
            f"{valid})")
    num_bases = (degrees[0] + 1) ** 2

    n = vertex.count

    def stack(names: list[str]) -> np.ndarray:
        if not names:
            return np.empty((n, 0), np.float32)
        return np.stack([_as_f32(vertex[name]) for name in names], axis=-1)

    dc = stack(["f_dc_0", "f_dc_1", "f_dc_2"])
    rest = stack(_rest_names(num_rest)).reshape(n, 3, num_bases - 1).transpose(0, 2, 1)
    sh = np.concatenate([dc[:, None, :], rest], axis=1)
    return Gaussians(
        means=jnp.asarray(stack(["x", "y", "z"])),
        quats=jnp.asarray(stack(["rot_0", "rot_1", "rot_2", "rot_3"])),
        log_scales=jnp.asarray(stack(["scale_0", "scale_1", "scale_2"])),
        opacity_logits=jnp.asarray(_as_f32(vertex["opacity"])),
        sh=jnp.asarray(sh),
    )
