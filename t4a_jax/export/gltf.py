"""An animated glTF 2.0 binary (.glb): a triangle mesh with one morph target per frame
and an animation that plays them.

    write_animated_glb("animated.glb", vertices, faces, frames, fps=8.0, colors=rgb)

The file holds one node with one mesh of one triangle primitive: POSITION (the
`vertices` [V, 3], float32), COLOR_0 (`colors` [V, 3] in [0, 1], float32, optional),
uint32 indices (`faces` [M, 3]) and T morph targets, target f the displacement
`frames[f] - vertices` ([V, 3]; glTF targets are displacements). Its animation has one
sampler on the node's `weights`: keyframe f at time f / fps with weight 1 on target f
and 0 elsewhere, LINEAR, so players blend consecutive frames and the mesh passes through
every frame's positions exactly at its keyframe; the mesh's default weights are all 0
(the rest mesh). Target names (`extras.targetNames`, which Blender reads as shape key
names) are `frame_000`, `frame_001`, ... Blender imports the targets as shape keys
(with the animation as their actions), three.js as `morphTargetInfluences` with an
`AnimationClip`, trimesh as geometry (the targets stay in the file).

Layout (glTF 2.0 spec, "GLB File Format"): a 12-byte header (magic `glTF`, version 2,
length), a JSON chunk padded with spaces and a BIN chunk padded with zeros, both to 4
bytes; every accessor of POSITION and of each target has its min and max, as the spec
requires.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from t4a_jax.atomic import atomic_write

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_FLOAT, _UNSIGNED_INT = 5126, 5125
_TRIANGLES = 4


def _padded(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def write_animated_glb(path: str, vertices: np.ndarray, faces: np.ndarray,
                       frames: np.ndarray, *, fps: float, colors: np.ndarray | None = None,
                       name: str = "animated") -> None:
    """Write the .glb of the module docstring to `path` (atomically)."""
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces)
    frames = np.asarray(frames, np.float32)
    count = len(vertices)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or count == 0:
        raise ValueError(f"{path}: vertices {vertices.shape}, expected [V > 0, 3]")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0:
        raise ValueError(f"{path}: faces {faces.shape}, expected [M > 0, 3]")
    if faces.min() < 0 or faces.max() >= count:
        raise ValueError(f"{path}: face indices outside [0, {count})")
    if frames.ndim != 3 or frames.shape[1:] != vertices.shape or len(frames) == 0:
        raise ValueError(f"{path}: frames {frames.shape}, expected [T > 0, {count}, 3]")
    if not fps > 0:
        raise ValueError(f"{path}: fps={fps} must be > 0")
    if colors is not None:
        colors = np.asarray(colors, np.float32)
        if colors.shape != vertices.shape:
            raise ValueError(f"{path}: colors {colors.shape}, expected {vertices.shape}")

    blob = bytearray()
    views: list[dict] = []
    accessors: list[dict] = []

    def add(array: np.ndarray, kind: str, component: int, target: int | None = None,
            bounds: bool = False) -> int:
        """Append `array` to the buffer as one bufferView + accessor; its index."""
        data = np.ascontiguousarray(array)
        offset = len(blob)
        blob.extend(_padded(data.tobytes(), b"\0"))
        view = {"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes}
        if target is not None:
            view["target"] = target
        views.append(view)
        accessor = {"bufferView": len(views) - 1, "componentType": component,
                    "count": len(data), "type": kind}
        if bounds:
            flat = data.reshape(len(data), -1)
            accessor["min"] = [float(v) for v in flat.min(0)]
            accessor["max"] = [float(v) for v in flat.max(0)]
        accessors.append(accessor)
        return len(accessors) - 1

    attributes = {"POSITION": add(vertices, "VEC3", _FLOAT, _ARRAY_BUFFER, bounds=True)}
    if colors is not None:
        attributes["COLOR_0"] = add(np.clip(colors, 0.0, 1.0), "VEC3", _FLOAT, _ARRAY_BUFFER)
    indices = add(faces.astype(np.uint32).reshape(-1), "SCALAR", _UNSIGNED_INT,
                  _ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": add(frame - vertices, "VEC3", _FLOAT, _ARRAY_BUFFER, bounds=True)}
               for frame in frames]
    num_frames = len(frames)
    times = add(np.arange(num_frames, dtype=np.float32) / np.float32(fps), "SCALAR", _FLOAT,
                bounds=True)
    weights = add(np.eye(num_frames, dtype=np.float32).reshape(-1), "SCALAR", _FLOAT)
    names = [f"frame_{f:03d}" for f in range(num_frames)]
    document = {
        "asset": {"version": "2.0", "generator": "t4a_jax"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "weights": [0.0] * num_frames,
                    "extras": {"targetNames": names},
                    "primitives": [{"attributes": attributes, "indices": indices,
                                    "mode": _TRIANGLES, "targets": targets}]}],
        "animations": [{"name": "motion",
                        "samplers": [{"input": times, "output": weights,
                                      "interpolation": "LINEAR"}],
                        "channels": [{"sampler": 0,
                                      "target": {"node": 0, "path": "weights"}}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    text = _padded(json.dumps(document, separators=(",", ":")).encode(), b" ")
    binary = bytes(blob)
    length = 12 + 8 + len(text) + 8 + len(binary)
    with atomic_write(path) as file:
        file.write(struct.pack("<4sII", b"glTF", 2, length))
        file.write(struct.pack("<I4s", len(text), b"JSON") + text)
        file.write(struct.pack("<I4s", len(binary), b"BIN\0") + binary)
