"""Models, train state and the jitted update of Stage One training.

Models (`build_models`): a `ModelBundle` (the U-Net, the frozen VAE, CLIP text tower,
tokenizer and, with IP-Adapter, CLIP image tower) loaded from converted checkpoints
(`init_from`, `load_bundle`) straight into their shards on the mesh, or initialised at
random (tiny). The U-Net runs in the run's compute dtype and remat; its parameters stay
float32. The trained models are written back as a bundle (`export_models`).

Train state (a plain dict pytree, what a checkpoint holds besides the data position):

    {"step": int32 [], "params": nnx.State (trainable U-Net params, f32 master weights),
     "opt_state": optax state (same Variables and shardings as params),
     "rng": uint32 key data (the run's base key)}

The frozen parameters (the rest of the U-Net and the encoders) are a second, separate
pytree: never donated, never differentiated, never written to the step checkpoints
(they come from `init_from` or a fixed seed, and the final `WORKDIR/models` export).

The update (`make_train_step`), one jitted function per global batch:
  1. key = fold_in(base key, step): the step's randomness depends only on the step, so a
     resumed run draws what the uninterrupted one would have.
  2. The global batch [B, ...] is cut into `grad_accum_steps` micro-batches; micro-batch
     i holds rows i, i + A, i + 2A, ... (a reshape [B/A, A] + transpose, which keeps
     every micro-batch evenly sharded over 'data'), and a `lax.scan` runs each:
     frozen encoders (VAE sample x 0.18215 of all frames, CLIP text states of the
     prompt ids, IP-Adapter image embeddings of frame 0 of every view), then
     `jax.value_and_grad` of `stage_one_loss` w.r.t. the trainable params only.
     Gradients and loss parts are averaged over micro-batches, so one step is one
     optimizer update over the whole global batch, whatever A is.
  3. optax: clip_by_global_norm -> AdamW (linear warmup, then constant lr).
  4. A non-finite loss or gradient norm leaves params and optimizer state unchanged
     (`jnp.where`); the host then stops the run or counts a skip (config.skip_nonfinite).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from t4a_jax.diffusion.schedule import NoiseSchedule
from t4a_jax.models.bundle import ModelBundle, SamplingDefaults, load_bundle, save_bundle
from t4a_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                                 CLIPVisionModelWithProjection)
from t4a_jax.models.encoders import frame_latents, image_embeddings, prompt_states
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.unet import UNet, UNetConfig, trainable_filter
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from t4a_jax.sharding import named_shardings
from t4a_jax.training.objective import StageOneBatch, StageOneLossConfig, stage_one_loss

BATCH_FIELDS = ("frames", "cameras", "tracks", "visibility", "query_valid")


# ----------------------------------------------------------------------------- models

def build_models(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelBundle:
    """The Stage One models on `mesh` (parameters placed by their logical axes), with the
    run's compute dtype and remat: the bundle `config.init_from` (`load_bundle`; unet,
    vae, text encoder, tokenizer and the image encoder of an IP-Adapter U-Net), or
    `random_models`."""
    if not config.init_from:
        return random_models(config, mesh)
    try:
        return load_bundle(config.init_from, mesh=mesh,
                           dtype=jnp.dtype(config.compute_dtype).type,
                           remat=bool(config.remat))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"config.init_from={config.init_from}: {e}") from e


def random_models(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelBundle:
    """Random models from `config.random_init` (seeded by `config.seed`); the U-Net gets
    its own initialisers (zero I2V / motion-module outputs included)."""
    unet_config = dataclasses.replace(UNetConfig.from_config_dict(config.random_init.unet),
                                      dtype=jnp.dtype(config.compute_dtype).type,
                                      remat=bool(config.remat))
    if config.random_init.encoders == "tiny":
        vae_config = VAEConfig.tiny()
        text_config = dataclasses.replace(CLIPTextConfig.tiny(), max_position_embeddings=77,
                                          hidden_size=unet_config.cross_attention_dim)
        vision_config = dataclasses.replace(CLIPVisionConfig.tiny(),
                                            projection_dim=unet_config.image_embed_dim)
    else:
        vae_config, text_config, vision_config = (VAEConfig(), CLIPTextConfig(),
                                                  CLIPVisionConfig())
    rngs = nnx.Rngs(config.seed)

    def placed(module):
        state = nnx.state(module)
        nnx.update(module, jax.device_put(state, named_shardings(state, mesh)))
        return module

    unet = placed(UNet(unet_config, rngs=rngs))
    vae = placed(AutoencoderKL(vae_config, rngs=rngs))
    text_encoder = placed(CLIPTextModel(text_config, rngs=rngs))
    image_encoder = (placed(CLIPVisionModelWithProjection(vision_config, rngs=rngs))
                     if unet_config.use_ip_adapter else None)
    return ModelBundle(unet, vae, text_encoder, CLIPTokenizer.byte_level(77), image_encoder)


TRAINABLE = {"paper": trainable_filter, "all": nnx.Param}


def trainable_of(config: ml_collections.ConfigDict) -> Any:
    """The NNX filter of the U-Net parameters `config.trainable` names: 'paper' (the I2V
    adapter and motion modules, `models.unet.trainable_filter`) or 'all' (a U-Net trained
    from random weights, whose frozen spatial layers would never learn to denoise)."""
    if config.trainable not in TRAINABLE:
        raise ValueError(f"config.trainable={config.trainable!r}, expected one of "
                         f"{sorted(TRAINABLE)}")
    return TRAINABLE[config.trainable]


def export_models(models: ModelBundle, unet_params: nnx.State, path: str,
                  sampling: SamplingDefaults, trainable: Any = trainable_filter) -> None:
    """`save_bundle` of `models` into `path`, the U-Net with `unet_params` (the trained
    ones, split by the filter `trainable`) and the `sampling` defaults of the run."""
    unet_graph, _, frozen = nnx.split(models.unet, trainable, ...)
    trained = nnx.merge(unet_graph, unet_params, frozen)
    if jax.process_index() == 0:
        save_bundle(dataclasses.replace(models, unet=trained, sampling=sampling), path)


# ------------------------------------------------------------------ optimizer and state

def make_optimizer(config: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation,
                                                               optax.Schedule]:
    """clip_by_global_norm -> AdamW with a linear warmup to `lr`, then constant."""
    opt = config.optimizer
    warmup = int(opt.warmup_steps)
    schedule = optax.constant_schedule(opt.lr)
    if warmup:     # diffusers' constant_with_warmup: lr * step / warmup, then lr
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, opt.lr, warmup), schedule], [warmup])
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm),
                     optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                                 weight_decay=opt.weight_decay))
    return tx, schedule


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the jitted step closes over: graph definitions (static), the split of the
    frozen parameters, and the train state's shardings."""

    graphdefs: dict[str, Any]
    frozen: dict[str, Any]
    state: dict[str, Any]
    state_shardings: dict[str, Any]
    frozen_shardings: dict[str, Any]


def init_state(models: ModelBundle, tx: optax.GradientTransformation, seed: int,
               mesh: Mesh, trainable: Any = trainable_filter) -> Parts:
    """Split the models once: graphdefs, trainable params (the U-Net's parameters the
    filter `trainable` selects -> train state) and the frozen rest; the optimizer state
    is made by tree-mapping over the params, so it keeps their Variables and
    `logical_axes` and is placed like them."""
    unet_graph, params, unet_frozen = nnx.split(models.unet, trainable, ...)
    graphdefs, frozen = {"unet": unet_graph}, {"unet": unet_frozen}
    for name in ("vae", "text_encoder", "image_encoder"):
        module = getattr(models, name)
        if module is not None:
            graphdefs[name], frozen[name] = nnx.split(module)
    state = {"step": jnp.zeros((), jnp.int32), "params": params,
             "opt_state": tx.init(params),
             "rng": jax.random.key_data(jax.random.key(seed))}
    state_shardings = named_shardings(state, mesh)
    frozen_shardings = named_shardings(frozen, mesh)
    # Own buffers for every leaf: optax's zero counters may share one cached constant,
    # and the module keeps the original params; the step donates all of them.
    state = jax.device_put(jax.tree.map(lambda x: jnp.array(x, copy=True), state),
                           state_shardings)
    return Parts(graphdefs, frozen, state, state_shardings, frozen_shardings)


def abstract_state(parts: Parts) -> Any:
    """ShapeDtypeStructs with shardings: the restore target of a checkpoint."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        parts.state, parts.state_shardings)


def count_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


# ------------------------------------------------------------------------------ the step

def device_batch(batch: dict[str, np.ndarray], tokenizer: CLIPTokenizer,
                 cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The numeric fields the step needs plus the prompts' token ids [b, L] (tokenized
    on the host, cached per prompt)."""
    out = {k: batch[k] for k in BATCH_FIELDS}
    rows = []
    for prompt in batch["prompt"]:
        prompt = str(prompt)
        if prompt not in cache:
            cache[prompt] = tokenizer([prompt])[0]
        rows.append(cache[prompt])
    out["ids"] = np.stack(rows)
    return out


def encode_batch(graphdefs: dict[str, Any], frozen: dict[str, Any], batch: dict[str, Any],
                 key: jax.Array) -> StageOneBatch:
    """Frozen encoders on one micro-batch -> the objective's `StageOneBatch`."""
    vae = nnx.merge(graphdefs["vae"], frozen["vae"])
    text_encoder = nnx.merge(graphdefs["text_encoder"], frozen["text_encoder"])
    frames = batch["frames"]                                   # [b, V, F, H, W, 3]
    b, v, f, h, w, _ = frames.shape
    latents = frame_latents(vae, frames, key)                  # [b, V, F, h, w, C]
    latents = latents.reshape((b * v, f) + latents.shape[3:])
    image_embeds = None
    if "image_encoder" in graphdefs:
        image_encoder = nnx.merge(graphdefs["image_encoder"], frozen["image_encoder"])
        condition = (frames[:, :, 0].reshape(b * v, h, w, 3) + 1.0) / 2.0
        image_embeds = image_embeddings(image_encoder, condition)
    return jax.lax.stop_gradient(StageOneBatch(
        latents=latents, text_states=prompt_states(text_encoder, batch["ids"], v),
        cameras=batch["cameras"].reshape(b * v, 16), tracks=batch["tracks"],
        visibility=batch["visibility"], query_valid=batch["query_valid"],
        image_embeds=image_embeds))


def make_train_step(parts: Parts, tx: optax.GradientTransformation, lr_schedule: Callable,
                    schedule: NoiseSchedule, loss_config: StageOneLossConfig,
                    image_size: tuple[int, int], grad_accum_steps: int) -> Callable:
    """`step(state, frozen, batch) -> (state, metrics)`, jitted with the state donated
    (see the module docstring). metrics: loss parts, grad_norm, lr, finite (bool)."""
    graphdefs = parts.graphdefs
    accum = grad_accum_steps

    def loss_fn(params, frozen_unet, micro, key):
        unet = nnx.merge(graphdefs["unet"], params, frozen_unet)
        return stage_one_loss(unet, micro, schedule, key, loss_config, image_size)

    def step(state, frozen, batch):
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
        # [B, ...] -> [A, B/A, ...]: micro-batch i = rows i::A.
        micro_batches = jax.tree.map(
            lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]),
                                   0, 1), batch)

        def one(carry, xs):
            grads_sum, parts_sum = carry
            index, micro = xs
            encode_key, loss_key = jax.random.split(jax.random.fold_in(key, index))
            inputs = encode_batch(graphdefs, frozen, micro, encode_key)
            (_, parts_), grads = jax.value_and_grad(loss_fn, has_aux=True)(
                state["params"], frozen["unet"], inputs, loss_key)
            return (jax.tree.map(jnp.add, grads_sum, grads),
                    jax.tree.map(jnp.add, parts_sum, parts_)), None

        zero_parts = {k: jnp.zeros((), jnp.float32) for k in
                      ("loss", "diffusion", "correspondence", "position", "timestep_mean",
                       "tracked_points")}
        init = (jax.tree.map(jnp.zeros_like, state["params"]), zero_parts)
        (grads, parts_sum), _ = jax.lax.scan(one, init, (jnp.arange(accum), micro_batches))
        grads = jax.tree.map(lambda g: g / accum, grads)
        metrics = {k: v.astype(jnp.float32) / accum for k, v in parts_sum.items()}
        metrics["tracked_points"] = metrics["tracked_points"] * accum   # a sum, not a mean
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        new_state = {"step": state["step"] + 1, "params": keep(params, state["params"]),
                     "opt_state": keep(opt_state, state["opt_state"]), "rng": state["rng"]}
        metrics.update(grad_norm=grad_norm, lr=jnp.asarray(lr_schedule(state["step"])),
                       finite=finite)
        return new_state, metrics

    return jax.jit(step, donate_argnums=(0,),
                   in_shardings=(parts.state_shardings, parts.frozen_shardings, None),
                   out_shardings=(parts.state_shardings, None))
