"""What the animate job hands its user: an animated glTF of a mesh (`gltf`) and one
self-contained 4D viewer page (`viewer`)."""

from t4a_jax.export.gltf import write_animated_glb
from t4a_jax.export.viewer import Tracks, write_viewer

__all__ = ["Tracks", "write_animated_glb", "write_viewer"]
