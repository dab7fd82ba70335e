"""The 4D asset on disk: a fitted motion field with its canonical Gaussians, from which
any continuous time can be rendered.

    save_asset4d(OUT / "asset", Asset4D(field, canonical, motion_config, num_frames, fps, ...))
    asset = load_asset4d(OUT / "asset")
    posed = asset.at(0.37)                 # Gaussians at tau = 0.37 (0: first frame)
    posed = asset.at_frame(5)              # ... at frame 5 of the fitted clip

Layout of the directory (written atomically, `atomic.atomic_directory`):

    asset.json      {"format": "t4a_jax.asset4d", "version": 1, "motion": MotionConfig,
                     "num_frames": F, "fps": ..., "name": ..., "prompt": ...}
    canonical.ply   the canonical Gaussians (3DGS layout, `render.ply`)
    field/          the MotionField (Orbax, `StandardSave`)
    frame_features.npy   a hybrid field's diffusion features [F, N, dim] at the clip's
                    frames (`fourd.diffusion_features`, computed from the Stage One maps
                    once, so the asset renders without them); between frames they are
                    interpolated linearly

Frame f of the fitted clip is at tau = f / (F - 1).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from t4a_jax.atomic import atomic_directory
from t4a_jax.fourd import (HexPlaneConfig, MotionConfig, MotionField, deform,
                           diffusion_features, init_motion_field)
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.ply import load_ply, save_ply

FORMAT, VERSION = "t4a_jax.asset4d", 1
INFO_FILE, CANONICAL_FILE, FIELD_DIR = "asset.json", "canonical.ply", "field"
FEATURES_FILE = "frame_features.npy"


@dataclasses.dataclass(frozen=True)
class Asset4D:
    """A fitted 4D asset (module docstring)."""

    field: MotionField
    canonical: Gaussians
    motion: MotionConfig
    num_frames: int
    fps: float
    name: str = ""
    prompt: str = ""
    frame_features: jax.Array | None = None

    def at(self, tau: float) -> Gaussians:
        """The Gaussians at time tau in [0, 1]."""
        features = None
        if self.frame_features is not None:
            position = float(np.clip(tau, 0.0, 1.0)) * (self.num_frames - 1)
            lo = min(int(np.floor(position)), self.num_frames - 2)
            w = position - lo
            features = (1 - w) * self.frame_features[lo] + w * self.frame_features[lo + 1]
        return _deform(self.field, self.canonical, jnp.float32(tau), features)

    def at_frame(self, frame: int) -> Gaussians:
        return self.at(frame / (self.num_frames - 1))


_deform = jax.jit(deform)


def frame_features(field: MotionField, inputs) -> jax.Array:
    """A hybrid field's diffusion features [F, N, dim] at every frame of its clip, from
    the clip's feature inputs (`reconstruction.step.FeatureInputs`, unpadded)."""
    maps = jnp.asarray(inputs.maps)
    return jax.jit(jax.vmap(lambda m: diffusion_features(field.features, m,
                                                         jnp.asarray(inputs.uv),
                                                         jnp.asarray(inputs.visible))))(maps)


def motion_config_dict(config: MotionConfig) -> dict:
    return dataclasses.asdict(config)


def motion_config_from_dict(data: dict) -> MotionConfig:
    """The inverse of `motion_config_dict` (lists back to tuples)."""
    plane = dict(data["hexplane"])
    plane["resolutions"] = tuple(tuple(r) for r in plane["resolutions"])
    return MotionConfig(**{**data, "hexplane": HexPlaneConfig(**plane)})


def save_asset4d(directory: str, asset: Asset4D) -> None:
    """Write `asset` to `directory` (replaced whole, atomically)."""
    with atomic_directory(directory) as tmp:
        save_ply(os.path.join(tmp, CANONICAL_FILE), asset.canonical)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(tmp, FIELD_DIR), jax.device_get(asset.field))
        if asset.frame_features is not None:
            np.save(os.path.join(tmp, FEATURES_FILE), np.asarray(asset.frame_features))
        info = {"format": FORMAT, "version": VERSION,
                "motion": motion_config_dict(asset.motion), "num_frames": asset.num_frames,
                "fps": asset.fps, "name": asset.name, "prompt": asset.prompt}
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as file:
            json.dump(info, file, indent=1)


def load_asset4d(directory: str) -> Asset4D:
    """Read an asset written by `save_asset4d`; ValueError naming the file at fault."""
    path = os.path.join(directory, INFO_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
        if info.get("format") != FORMAT:
            raise ValueError(f"format {info.get('format')!r}, expected {FORMAT!r}")
        motion = motion_config_from_dict(info["motion"])
        num_frames, fps = int(info["num_frames"]), float(info["fps"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a 4D asset description ({type(e).__name__}: {e})"
                         ) from e
    canonical = load_ply(os.path.join(directory, CANONICAL_FILE))
    target = jax.eval_shape(lambda: init_motion_field(jax.random.key(0), canonical, motion))
    with ocp.StandardCheckpointer() as checkpointer:
        field = checkpointer.restore(os.path.abspath(os.path.join(directory, FIELD_DIR)),
                                     target)
    features_path = os.path.join(directory, FEATURES_FILE)
    features = np.load(features_path) if os.path.isfile(features_path) else None
    if (features is None) != (field.features is None):
        raise ValueError(f"{directory}: a hybrid field needs {FEATURES_FILE} (and only it)")
    return Asset4D(field, canonical, motion, num_frames, fps, str(info.get("name", "")),
                   str(info.get("prompt", "")), features)

