"""Stage Two's update: the objects' targets, their train state, and one jitted, donated
step that fits every object's motion field at once.

    target = make_target(clip, train_views, num_gaussians, k=3)          # host -> Target
    state = init_state(key, clip.canonical, motion_config, tx, num_gaussians)
    step = make_step(StepConfig(...), tx, mesh)          # jit(vmap(one object's step))
    states, metrics = step(stack(states), stack(targets))  # leading axis: objects

One object's step at iteration s (its RNG key `fold_in(base, s)`, so a resumed run
draws what an unbroken one would):
- frames: `frames_per_step` frame indices drawn among the frames in play
  (`fourd.draw_frames`: one more every `progressive_every` iterations), at
  tau = index / (F - 1), each seen from all the training views (paper: 4 x 16 = 64
  renders), rendered by `fourd.render_frames` in one program over the clip's
  background;
- loss: `fourd.reconstruction_loss` (colour and mask, 100 each) + `arap_weight` x ARAP
  (from iteration `arap_start`; `arap_anchors` random anchors among the object's real
  Gaussians, its k canonical neighbours, averaged over the step's frames) +
  `tv_weight` x plane TV + `time_weight` x time smoothness + whatever `extra_loss`
  returns (the slot of the Stage One priors, e.g. `priors.SDSTerm.loss`: a function
  (field, target, key, step, frozen) -> (loss, metrics dict) added as it is; `frozen`
  is the step's third argument, replicated on every device: the networks it needs);
- update: the per-group optimiser (`fourd.make_optimizer`); a non-finite loss or
  gradient leaves the field and optimiser state untouched (`finite` = 0 in metrics).

Several objects: targets and states are stacked on a leading object axis (`stack`) and
the step is `vmap`ped over it, sharded over the mesh's 'data' axis: objects are
independent, so the program has no communication. Objects with fewer Gaussians are
padded to a common count: padded Gaussians are transparent (culled by the rasterizer,
so they neither render nor receive gradient), are never ARAP anchors and are dropped
on export; an object's fit is the same as it would be alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t4a_jax.fourd import (MotionConfig, MotionField, arap_loss, deform,
                           diffusion_features, draw_frames, frames_in_play, init_motion_field, nearest_neighbours,
                           plane_total_variation, reconstruction_loss, render_frames,
                           time_smoothness)
from t4a_jax.reconstruction.clips import Clip
from t4a_jax.render.gaussians import Gaussians

PAD_OPACITY_LOGIT = -30.0     # sigmoid ~ 1e-13: below the rasterizer's 1/255, culled
ExtraLoss = Callable[[MotionField, "Target", jax.Array, jax.Array, Any],
                     tuple[jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class FeatureInputs:
    """The diffusion-feature inputs of one object (see `Target`)."""

    maps: jax.Array
    uv: jax.Array
    visible: jax.Array


@struct.dataclass
class Target:
    """One object's fixed inputs on the device (a leading object axis when stacked).

    canonical: the static Gaussians padded to N; valid bool [N] (False: padding);
    num_valid int32 []; neighbours int32 [N, k] (canonical kNN among the valid ones);
    videos uint8 [V, F, H, W, 3] and masks bool [V, F, H, W] of the training views;
    viewmats [V, 4, 4], Ks [V, 3, 3], background [3]; priors: None (HexPlane features
    only) or the Stage One feature inputs of `fourd.features`: maps [F, V, h, w, C] of
    the training views, uv [V, N, 2], visible bool [V, N] (padding: never visible).
    """

    canonical: Gaussians
    valid: jax.Array
    num_valid: jax.Array
    neighbours: jax.Array
    videos: jax.Array
    masks: jax.Array
    viewmats: jax.Array
    Ks: jax.Array
    background: jax.Array
    priors: FeatureInputs | None = None


@struct.dataclass
class State:
    """One object's train state: the iteration count, the field, the optimiser state and
    the base RNG key (raw uint32 [2])."""

    step: jax.Array
    field: MotionField
    opt_state: Any
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """What a step does (module docstring); defaults are the paper's / Animate3D's."""

    frames_per_step: int = 16
    color_weight: float = 100.0
    mask_weight: float = 100.0
    arap_weight: float = 10.0
    arap_start: int = 750
    arap_anchors: int = 4096
    tv_weight: float = 0.0
    time_weight: float = 0.0
    progressive_every: int = 50
    progressive_initial: int = 1
    tile_capacity: int = 1024
    batch_size: int = 32

    def __post_init__(self) -> None:
        for name in ("frames_per_step", "arap_anchors", "progressive_every",
                     "progressive_initial", "tile_capacity", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"StepConfig.{name}={getattr(self, name)} must be >= 1")
        for name in ("color_weight", "mask_weight", "arap_weight", "tv_weight",
                     "time_weight", "arap_start"):
            if getattr(self, name) < 0:
                raise ValueError(f"StepConfig.{name}={getattr(self, name)} must be >= 0")


def pad_gaussians(gaussians: Gaussians, count: int) -> Gaussians:
    """`gaussians` followed by transparent copies of its first one, `count` in all."""
    pad = count - gaussians.num_gaussians
    if pad < 0:
        raise ValueError(f"pad_gaussians: {gaussians.num_gaussians} Gaussians > {count}")

    def extend(x, value=None):
        rows = jnp.broadcast_to(x[:1] if value is None else value, (pad,) + x.shape[1:])
        return jnp.concatenate([x, rows.astype(x.dtype)])

    return Gaussians(means=extend(gaussians.means), quats=extend(gaussians.quats),
                     log_scales=extend(gaussians.log_scales),
                     opacity_logits=extend(gaussians.opacity_logits, PAD_OPACITY_LOGIT),
                     sh=extend(gaussians.sh, 0.0))


def make_target(clip: Clip, train_views: np.ndarray, num_gaussians: int, *,
                neighbours: int = 3, priors: FeatureInputs | None = None) -> Target:
    """The device inputs of `clip`'s views `train_views` [V] (indices into the clip),
    its Gaussians padded to `num_gaussians`; `priors` of the unpadded Gaussians (uv
    [V, n, 2], visible [V, n]) are padded likewise."""
    n = clip.canonical.num_gaussians
    knn = nearest_neighbours(jnp.asarray(clip.canonical.means), neighbours)
    if priors is not None:
        pad = ((0, 0), (0, num_gaussians - n))
        priors = FeatureInputs(maps=jnp.asarray(priors.maps),
                               uv=jnp.pad(jnp.asarray(priors.uv), pad + ((0, 0),)),
                               visible=jnp.pad(jnp.asarray(priors.visible), pad))
    return Target(priors=priors,
        canonical=pad_gaussians(clip.canonical, num_gaussians),
        valid=jnp.arange(num_gaussians) < n, num_valid=jnp.int32(n),
        neighbours=jnp.pad(knn, ((0, num_gaussians - n), (0, 0))),
        videos=jnp.asarray(clip.videos[train_views]),
        masks=jnp.asarray(clip.masks[train_views]),
        viewmats=jnp.asarray(clip.viewmats[train_views]),
        Ks=jnp.asarray(clip.Ks[train_views]), background=jnp.asarray(clip.background))


def init_state(key: jax.Array, canonical: Gaussians, config: MotionConfig,
               tx: optax.GradientTransformation, num_gaussians: int) -> State:
    """A fresh state for the unpadded `canonical` (the field's box is its own), its
    per-Gaussian arrays padded to `num_gaussians`; `key` a typed or raw key."""
    raw = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    field = init_motion_field(jax.random.wrap_key_data(raw), canonical, config)
    pad = num_gaussians - canonical.num_gaussians
    field = field.replace(sh4d=jnp.pad(field.sh4d, ((0, pad),) + ((0, 0),) * 3))
    return State(step=jnp.int32(0), field=field, opt_state=tx.init(field), key=raw)


def stack(trees: list[Any]) -> Any:
    """Pytrees of the same structure stacked on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
    """Entry `index` of a stacked pytree (as host-independent device arrays)."""
    return jax.tree.map(lambda x: x[index], tree)


def object_sharding(mesh: Mesh, tree: Any) -> Any:
    """Shardings of a stacked pytree: the leading (object) axis over 'data'."""
    return jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec("data")), tree)


def objective(field: MotionField, target: Target, key: jax.Array, step: jax.Array,
              config: StepConfig, extra_loss: ExtraLoss | None = None, frozen: Any = None
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One object's loss at iteration `step` and its parts (module docstring)."""
    num_views, num_frames, height, width = target.masks.shape
    frame_key, anchor_key, extra_key = jax.random.split(key, 3)
    index = draw_frames(frame_key, step, num_frames, config.frames_per_step,
                        every=config.progressive_every, initial=config.progressive_initial)
    taus = index.astype(jnp.float32) / (num_frames - 1)
    count = config.frames_per_step
    viewmats = jnp.broadcast_to(target.viewmats, (count,) + target.viewmats.shape)
    ks = jnp.broadcast_to(target.Ks, (count,) + target.Ks.shape)
    backgrounds = jnp.broadcast_to(target.background, (count, num_views, 3))
    features = None
    if target.priors is not None:
        p = target.priors
        features = jax.vmap(lambda maps: diffusion_features(field.features, maps, p.uv,
                                                            p.visible))(p.maps[index])
    colors, alphas, overflow = render_frames(
        field, target.canonical, taus, viewmats, ks, width, height, backgrounds=backgrounds,
        tile_capacity=config.tile_capacity, features=features)
    frames = jnp.swapaxes(target.videos[:, index], 0, 1).astype(jnp.float32) / 255.0
    masks = jnp.swapaxes(target.masks[:, index], 0, 1)
    loss, parts = reconstruction_loss(colors, alphas, frames, masks,
                                      color_weight=config.color_weight,
                                      mask_weight=config.mask_weight)
    metrics = {"rec": loss, **parts}
    if config.arap_weight:
        anchors = jax.random.randint(anchor_key, (config.arap_anchors,), 0, target.num_valid)
        means = jax.vmap(lambda tau, f: deform(field, target.canonical, tau, f).means)(
            taus, features)
        arap = jnp.mean(jax.vmap(lambda m: arap_loss(target.canonical.means, m,
                                                     target.neighbours, anchors))(means))
        loss = loss + jnp.where(step >= config.arap_start, config.arap_weight, 0.0) * arap
        metrics["arap"] = arap
    if config.tv_weight:
        metrics["tv"] = plane_total_variation(field.hexplane)
        loss = loss + config.tv_weight * metrics["tv"]
    if config.time_weight:
        metrics["time"] = time_smoothness(field.hexplane)
        loss = loss + config.time_weight * metrics["time"]
    if extra_loss is not None:
        extra, extra_metrics = extra_loss(field, target, extra_key, step, frozen)
        loss = loss + extra
        metrics.update(extra_metrics)
    metrics["psnr"] = -10.0 * jnp.log10(jnp.maximum(parts["color"], 1e-10))
    metrics["overflow"] = jnp.max(overflow).astype(jnp.float32)
    metrics["frames_in_play"] = frames_in_play(step, num_frames,
                                               every=config.progressive_every,
                                               initial=config.progressive_initial
                                               ).astype(jnp.float32)
    return loss, metrics


def object_step(state: State, target: Target, config: StepConfig,
                tx: optax.GradientTransformation, extra_loss: ExtraLoss | None = None,
                frozen: Any = None) -> tuple[State, dict[str, jax.Array]]:
    """One object's update (module docstring); metrics are scalars."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)
    (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(
        state.field, target, key, state.step, config, extra_loss, frozen)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.field)
    field = optax.apply_updates(state.field, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = State(step=state.step + 1, field=keep(field, state.field),
                      opt_state=keep(opt_state, state.opt_state), key=state.key)
    return new_state, {**metrics, "loss": loss, "grad_norm": grad_norm,
                       "finite": finite.astype(jnp.float32)}


def make_step(config: StepConfig, tx: optax.GradientTransformation, mesh: Mesh,
              extra_loss: ExtraLoss | None = None
              ) -> Callable[[State, Target, Any], tuple[State, dict[str, jax.Array]]]:
    """The jitted step(states, targets, frozen) of stacked states and targets (objects
    on 'data') and the extra loss's `frozen` pytree (replicated; {} without one); the
    states are donated. Metrics come back per object [O]."""
    batched = jax.vmap(lambda s, t, f: object_step(s, t, config, tx, extra_loss, f),
                       in_axes=(0, 0, None))
    data = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(batched, in_shardings=(data, data, replicated),
                   out_shardings=(data, data), donate_argnums=0)
