"""Stage One's priors for Stage Two: the diffusion-feature inputs of the hybrid feature
(paper Eq. 6) and the 4D-SDS term (Eq. 11), built from a Stage One model bundle.

    inputs = feature_inputs(bundle, clip, train_views, tap="up_blocks.1.motion_modules.2")
    sds = SDSTerm.build(bundle, clip.prompt, SDSConfig(...), radius)
    step = make_step(step_config, tx, mesh, extra_loss=sds.loss)   # frozen: sds.frozen

Feature inputs (once per object; `load_or_compute_features` caches them as an .npz):
the U-Net's maps at `tap` from one slightly noised pass over the training views' video
(`pipeline.unet_features`, timestep `timestep`), arranged [F, V, h, w, C]; each
canonical centre projected into every view (`render.visibility.project_points`),
scaled to map pixels; visible where a mesh ray cast (`render.mesh.ray_visible`, when
the asset is a mesh file) or a depth test against the canonical asset's render
(`render.visibility.depth_visible`, margin `DEPTH_MARGIN` x the asset's extent) sees it.

The SDS term (Animate3D's 4D-SDS): at each step, from iteration `start`, the 4D asset is
rendered in 4 random views (elevation U[0, 30] degrees, 4 orthogonal azimuths with a
random offset, vertical field of view U[15, 60] degrees, at the distance where the
asset's bounding sphere fills the frame) at `frames` times evenly spread over the clip,
VAE-encoded (posterior mean x scaling, with gradient), and `fourd.sds_loss` compares it
with the guided Stage One U-Net's estimate (classifier-free guidance `guidance`, the
prompt against the empty prompt; camera vectors of the random views; the IP-Adapter's
image embedding of each view's frame-0 render). The U-Net and VAE come in as `frozen`
arguments of the step (not constants of the program), held in `param_dtype` (bf16 by
default, as the paper; they compute in their config's dtype). Only the VAE encoder is
differentiated (the U-Net's estimate is a fixed target), so no remat is needed for
the U-Net.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.atomic import atomic_write
from t4a_jax.diffusion import classifier_free_guidance, make_schedule
from t4a_jax.fourd import MotionField, deform, diffusion_features, sds_loss
from t4a_jax.models import ModelBundle
from t4a_jax.models.encoders import image_embeddings
from t4a_jax.pipeline import unet_features
from t4a_jax.reconstruction.clips import Clip
from t4a_jax.reconstruction.step import FeatureInputs, Target
from t4a_jax.render.cameras import c2w_to_viewmat, camera_vector, orbit_c2w, viewmat_to_c2w
from t4a_jax.render.mesh import ray_visible
from t4a_jax.render.rasterize import rasterize
from t4a_jax.render.views import ViewRenderer
from t4a_jax.render.visibility import depth_visible, project_points

DEPTH_MARGIN = 0.08      # x the asset's diagonal: how far behind the expected depth
MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".stl", ".off")


def feature_inputs(bundle: ModelBundle, clip: Clip, train_views: np.ndarray, *, tap: str,
                   timestep: int = 50, seed: int = 0) -> FeatureInputs:
    """The hybrid feature's inputs of `clip` (module docstring): maps [F, V, h, w, C]
    float32, uv [V, N, 2], visible [V, N]."""
    unet = bundle.unet
    if tap not in unet.feature_names():
        raise ValueError(f"feature tap {tap!r} is not a U-Net module; some are "
                         f"{list(unet.feature_names())[-8:]}")
    views = np.asarray(train_views)
    frames = clip.videos[views].astype(np.float32) / 127.5 - 1.0           # [V, F, S, S, 3]
    text = bundle.text_states([clip.prompt])
    cameras = (camera_vector(np.asarray(viewmat_to_c2w(clip.viewmats[views])))
               if unet.config.use_camera_embedding else None)
    maps = unet_features(unet, bundle.vae, frames, text, cameras=cameras, timestep=timestep,
                         seed=seed, capture=(tap,))[tap]
    maps = np.asarray(jnp.swapaxes(maps, 0, 1), np.float32)                 # [F, V, h, w, C]
    height, width = clip.size
    means = np.asarray(clip.canonical.means, np.float64)
    xy, _ = project_points(np.broadcast_to(means, (len(views),) + means.shape),
                           clip.viewmats[views], clip.Ks[views])
    uv = xy * np.array([maps.shape[3] / width, maps.shape[2] / height])
    return FeatureInputs(maps=maps, uv=uv.astype(np.float32),
                         visible=centre_visibility(clip, views))


def centre_visibility(clip: Clip, views: np.ndarray) -> np.ndarray:
    """bool [V, N]: which views see each canonical centre (module docstring)."""
    means = np.asarray(clip.canonical.means, np.float64)
    if clip.static_path.lower().endswith(MESH_SUFFIXES):
        centres = np.asarray(viewmat_to_c2w(clip.viewmats[views]))[:, :3, 3]
        return ray_visible(clip.static_path, means, centres)
    height, width = clip.size
    render = ViewRenderer(width, height)(clip.canonical, clip.viewmats[views], clip.Ks[views])
    extent = float(np.linalg.norm(np.ptp(means, axis=0)))
    return depth_visible(means, clip.viewmats[views], clip.Ks[views], render.depths,
                         render.alphas, margin=DEPTH_MARGIN * extent)


def load_or_compute_features(path: str, compute) -> FeatureInputs:
    """The cached inputs at `path` (.npz), else `compute()` written there atomically."""
    if os.path.isfile(path):
        with np.load(path) as data:
            return FeatureInputs(maps=data["maps"], uv=data["uv"], visible=data["visible"])
    inputs = compute()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_write(path) as file:
        np.savez(file, maps=inputs.maps, uv=inputs.uv, visible=inputs.visible)
    return inputs


# ----------------------------------------------------------------------------- SDS


@dataclasses.dataclass(frozen=True)
class SDSConfig:
    """The 4D-SDS term (module docstring): weight (paper lambda5 = 0.01), the iteration
    it starts at (paper: 750), views x frames rendered at `size` px, guidance, t range."""

    weight: float = 0.01
    start: int = 750
    views: int = 4
    frames: int = 16
    size: int = 256
    guidance: float = 5.0
    t_min: int = 20
    t_max: int = 200
    elevation: tuple[float, float] = (0.0, 30.0)
    fovy: tuple[float, float] = (15.0, 60.0)
    param_dtype: str = "bfloat16"     # how the frozen U-Net and VAE are held on device


def random_cameras(key: jax.Array, count: int, size: int, radius: float,
                   config: SDSConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(viewmats [count, 4, 4], Ks [count, 3, 3], c2w [count, 4, 4]) of the SDS views:
    one elevation and field of view, `count` azimuths 360 / count apart from a random
    offset, at the distance where a sphere of `radius` fills the frame."""
    e_key, a_key, f_key = jax.random.split(key, 3)
    elevation = jax.random.uniform(e_key, (), minval=config.elevation[0],
                                   maxval=config.elevation[1])
    fovy = jax.random.uniform(f_key, (), minval=config.fovy[0], maxval=config.fovy[1])
    azimuths = jax.random.uniform(a_key, (), maxval=360.0) + 360.0 * jnp.arange(count) / count
    distance = radius / jnp.sin(jnp.deg2rad(fovy) / 2)
    c2w = orbit_c2w(elevation, azimuths, distance)
    k = _intrinsics(fovy, size)
    return c2w_to_viewmat(c2w), jnp.broadcast_to(k, (count, 3, 3)), c2w


def _intrinsics(fovy_degrees: jax.Array, size: int) -> jax.Array:
    """`render.cameras.intrinsics_from_fov` for a traced field of view (square)."""
    focal = 0.5 * size / jnp.tan(jnp.deg2rad(fovy_degrees) / 2)
    return jnp.array([[1.0, 0.0, 0.5 * size], [0.0, 1.0, 0.5 * size], [0.0, 0.0, 1.0]]
                     ).at[0, 0].set(focal).at[1, 1].set(focal)


def _as_dtype(x: Any, dtype: Any) -> Any:
    """A floating array (or an abstract one) stored as `dtype`; other leaves as they are."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
    return x.astype(dtype)


@dataclasses.dataclass(frozen=True)
class SDSTerm:
    """The term's static parts (graphdefs, config, radius) and its `frozen` arrays (the
    U-Net and VAE states, the text states); `loss` is the step's `extra_loss`."""

    graphdefs: tuple
    config: SDSConfig
    radius: float
    frozen: dict[str, Any]
    uses_cameras: bool
    image_encoder: Any

    @classmethod
    def build(cls, bundle: ModelBundle, prompt: str, config: SDSConfig, radius: float
              ) -> "SDSTerm":
        graphdefs, frozen = {}, {}
        dtype = jnp.dtype(config.param_dtype)
        for name in ("unet", "vae"):
            graphdefs[name], state = nnx.split(getattr(bundle, name))
            frozen[name] = jax.tree.map(lambda x: _as_dtype(x, dtype), state)
        texts = bundle.text_states([prompt, ""])
        frozen["text"], frozen["null"] = texts[:1], texts[1:]
        image_encoder = bundle.image_encoder if bundle.unet.config.use_ip_adapter else None
        if image_encoder is not None:
            graphdefs["image"], frozen["image"] = nnx.split(image_encoder)
        return cls(tuple(sorted(graphdefs.items())), config, float(radius), frozen,
                   bundle.unet.config.use_camera_embedding, image_encoder is not None)

    def loss(self, field: MotionField, target: Target, key: jax.Array, step: jax.Array,
             frozen: dict[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        c = self.config
        on = step >= c.start
        value = jax.lax.cond(on, lambda: self._value(field, target, key, frozen),
                             lambda: jnp.zeros((), jnp.float32))
        return c.weight * value, {"sds": value}

    def _value(self, field, target, key, frozen) -> jax.Array:
        c, graphdefs = self.config, dict(self.graphdefs)
        unet = nnx.merge(graphdefs["unet"], frozen["unet"])
        vae = nnx.merge(graphdefs["vae"], frozen["vae"])
        camera_key, sds_key = jax.random.split(key)
        viewmats, ks, c2w = random_cameras(camera_key, c.views, c.size, self.radius, c)
        taus = jnp.linspace(0.0, 1.0, c.frames)

        def render(tau, frame_maps):
            features = (None if target.priors is None else diffusion_features(
                field.features, frame_maps, target.priors.uv, target.priors.visible))
            posed = deform(field, target.canonical, tau, features)
            colors, _, _ = rasterize(**posed.activated(), viewmats=viewmats, Ks=ks,
                                     width=c.size, height=c.size, sh_degree=posed.sh_degree,
                                     backgrounds=jnp.broadcast_to(target.background,
                                                                  (c.views, 3)))
            return colors                                           # [V, S, S, 3]

        index = jnp.round(taus * (target.masks.shape[1] - 1)).astype(jnp.int32)
        maps = None if target.priors is None else target.priors.maps[index]
        colors = jax.vmap(render)(taus, maps)                       # [F, V, S, S, 3]
        images = jnp.swapaxes(jnp.clip(colors, 0.0, 1.0), 0, 1)     # [V, F, S, S, 3]
        flat = images.reshape((-1,) + images.shape[2:]) * 2.0 - 1.0
        mean, _ = vae.encode(flat.astype(jnp.float32))
        latents = vae.scale(mean).reshape((c.views, c.frames) + mean.shape[1:])
        cond = {"text": jnp.repeat(frozen["text"], c.views, axis=0)}
        uncond = {"text": jnp.repeat(frozen["null"], c.views, axis=0)}
        if self.uses_cameras:
            cond["cameras"] = uncond["cameras"] = camera_vector(c2w)
        if self.image_encoder:
            encoder = nnx.merge(graphdefs["image"], frozen["image"])
            embeds = image_embeddings(encoder, jax.lax.stop_gradient(images[:, 0]))
            cond["image"], uncond["image"] = embeds, jnp.zeros_like(embeds)

        def denoise(noisy, t):
            def eps(branch):
                return unet(noisy, t, branch["text"], cameras=branch.get("cameras"),
                            image_embeds=branch.get("image"), num_views=c.views)
            return classifier_free_guidance(eps(uncond), eps(cond), c.guidance)

        return sds_loss(latents, denoise, make_schedule(), sds_key, t_min=c.t_min,
                        t_max=c.t_max)
