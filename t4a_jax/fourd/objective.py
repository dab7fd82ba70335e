"""Stage Two's reconstruction objective and optimiser (paper Eq. 10, Appendix A;
Animate3D's 4D stage where the paper is silent).

    loss, parts = reconstruction_loss(colors, alphas, frames, masks)
    taus_index = draw_frames(key, step, num_frames, count)     # progressive frames
    tx = make_optimizer(OptimizerConfig())                     # per-group learning rates

L_rec = color_weight * mean |render - video|^2 + mask_weight * mean (alpha - mask)^2,
the render composited over the video's own background colour, so the colour term also
asks the background pixels to stay empty (Animate3D weights both 100). Renders and
videos are [..., H, W, 3] in [0, 1], alphas [..., H, W, 1], masks [..., H, W] in {0, 1}.

Frames are added progressively: at step s the first `min(F, initial + s // every)`
frames are in play (Animate3D: one more every 50 iterations), and a step's frames are
drawn uniformly among them (static shapes: the count drawn never changes).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from t4a_jax.fourd.deform import MotionField


def reconstruction_loss(colors: jax.Array, alphas: jax.Array, frames: jax.Array,
                        masks: jax.Array, *, color_weight: float = 100.0,
                        mask_weight: float = 100.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(L_rec, {"color": ..., "mask": ...}) of renders against video frames (shapes in
    the module docstring)."""
    color = jnp.mean(jnp.square(colors - frames))
    mask = jnp.mean(jnp.square(alphas[..., 0] - masks.astype(alphas.dtype)))
    return color_weight * color + mask_weight * mask, {"color": color, "mask": mask}


def frames_in_play(step: jax.Array, num_frames: int, *, every: int = 50,
                   initial: int = 1) -> jax.Array:
    """How many of the first frames are used at `step` (int32 scalar)."""
    return jnp.minimum(num_frames, initial + jnp.asarray(step) // every).astype(jnp.int32)


def draw_frames(key: jax.Array, step: jax.Array, num_frames: int, count: int, *,
                every: int = 50, initial: int = 1) -> jax.Array:
    """`count` frame indices [count] int32 drawn uniformly (with replacement) from the
    frames in play at `step`; once all are in play and `count == num_frames`, the
    frames are a random permutation of all of them."""
    available = frames_in_play(step, num_frames, every=every, initial=initial)
    drawn = jax.random.randint(key, (count,), 0, available)
    if count != num_frames:
        return drawn
    return jnp.where(available == num_frames, jax.random.permutation(key, num_frames),
                     drawn).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam learning rates per group (paper Appendix A: planes 0.01, heads 1e-4; the 4D
    SH its own) and Adam's eps (1e-15, as 3DGS codes use)."""

    planes_lr: float = 0.01
    heads_lr: float = 1e-4
    sh4d_lr: float = 2.5e-3
    eps: float = 1e-15


def parameter_groups(field: MotionField) -> MotionField:
    """The optimiser group of every leaf of a field: 'planes', 'box' (the normalisation
    box, never optimised), 'heads' (the decoder and the diffusion-feature projection)
    or 'sh4d'."""
    return MotionField(
        hexplane=field.hexplane.replace(
            planes=jax.tree.map(lambda _: "planes", field.hexplane.planes),
            lower="box", upper="box"),
        decoder=jax.tree.map(lambda _: "heads", field.decoder),
        sh4d="sh4d", features=jax.tree.map(lambda _: "heads", field.features))


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """Adam with one learning rate per group of `parameter_groups`; the box is frozen."""
    adam = lambda lr: optax.adam(lr, eps=config.eps)
    return optax.multi_transform(
        {"planes": adam(config.planes_lr), "heads": adam(config.heads_lr),
         "sh4d": adam(config.sh4d_lr), "box": optax.set_to_zero()},
        parameter_groups)
