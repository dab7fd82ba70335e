"""Stage Two's training loop over one or several objects: mesh, init or restore, the
jitted step, progress, TensorBoard, checkpoints, SIGTERM.

    result = fit(clips, train_views, FitConfig(...), workdir)
    result.fields[i]                 # object i's MotionField (its own Gaussian count)

- Objects: the clips' targets and states are stacked (`step.stack`) and padded to a
  common Gaussian count; the object axis is sharded over a ('data',) mesh of
  `mesh_data` devices (default: as many as there are objects, at most all devices).
  When the object count is not a multiple of it, the last object is repeated to fill
  the mesh; the copies are computed and dropped.
- RNG: object i's base key is `fold_in(key(seed), crc32(name))`, so an object draws the
  same frames and anchors whichever other objects share its program.
- Checkpoints (`t4a_jax.checkpoints`): WORKDIR/checkpoints holds the stacked state
  and the run's description (clip names, Gaussian count); the latest one is restored
  on start, and one of other clips is refused. Saved every `checkpoint_every`
  iterations, at `stop_after`, at the end and on SIGTERM (at the next step boundary).
  The step is a pure function of (state, targets), so a resumed run continues bit for
  bit.
- Progress: a tqdm bar over iterations with the mean loss and PSNR over objects;
  every `log_every` iterations each object's metrics go to TensorBoard (WORKDIR/tb,
  `<object>/<metric>`) and the log. Tile overflows (renders cut short) are warned
  about at their 1st, 10th and 100th iteration, a skipped non-finite update always.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec
from tensorboardX import SummaryWriter
from tqdm import tqdm

from t4a_jax.checkpoints import Preemption, make_manager
from t4a_jax.fourd import MotionConfig, MotionField, OptimizerConfig, make_optimizer
from t4a_jax.reconstruction.clips import Clip
from t4a_jax.reconstruction.step import (ExtraLoss, FeatureInputs, StepConfig, init_state,
                                         make_step, make_target, object_sharding, stack,
                                         unstack)
from t4a_jax.render.rasterize import rasterize
from t4a_jax.sharding import make_mesh

CAPACITY_MARGIN = 1.5    # tile capacity over what the canonical asset needs


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Everything a fit needs besides its clips (module docstring)."""

    motion: MotionConfig = MotionConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    step: StepConfig = StepConfig()
    iterations: int = 1000
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 250
    max_to_keep: int = 2
    stop_after: int | None = None
    mesh_data: int | None = None
    neighbours: int = 3


@dataclasses.dataclass
class FitResult:
    fields: list[MotionField]
    step: int
    stopped: str                         # 'done', 'stop_after' or 'sigterm'
    history: list[tuple[int, dict[str, np.ndarray]]]
    wall_s: float


def object_key(seed: int, name: str) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()))


def tile_capacity_needed(clips: Sequence[Clip], train_views: np.ndarray,
                         batch_size: int) -> int:
    """The tile capacity for training: `CAPACITY_MARGIN` times the most Gaussians any
    16 x 16 tile of a canonical render holds, rounded up to `batch_size`, at most the
    (rounded) Gaussian count."""
    needed = 1
    for clip in clips:
        n = clip.canonical.num_gaussians
        _, _, meta = rasterize(**clip.canonical.activated(),
                               viewmats=jnp.asarray(clip.viewmats[train_views]),
                               Ks=jnp.asarray(clip.Ks[train_views]), width=clip.size[1],
                               height=clip.size[0], sh_degree=clip.canonical.sh_degree,
                               tile_capacity=n, batch_size=batch_size)
        needed = max(needed, int(np.max(meta["max_tile_count"])))
    limit = max(c.canonical.num_gaussians for c in clips)
    capacity = min(int(np.ceil(CAPACITY_MARGIN * needed)), limit)
    return -(-capacity // batch_size) * batch_size


def fit(clips: Sequence[Clip], train_views: np.ndarray, config: FitConfig, workdir: str, *,
        devices: Sequence[jax.Device] | None = None,
        extra_loss: ExtraLoss | None = None, frozen: Any = None,
        priors: Sequence[FeatureInputs] | None = None) -> FitResult:
    """Fit (or resume fitting) every clip's motion field; see the module docstring.
    `extra_loss` and its `frozen` networks: see `step`; `priors`: each clip's
    diffusion-feature inputs (for a config with `motion.feature_channels`)."""
    if (priors is not None) != bool(config.motion.feature_channels):
        raise ValueError(f"motion.feature_channels={config.motion.feature_channels} needs "
                         f"the feature inputs of every clip (and 0 none)")
    names = [clip.name for clip in clips]
    shapes = {(c.num_frames,) + c.size for c in clips}
    if len(shapes) > 1:
        raise ValueError(f"clips {names} differ in frames x height x width {sorted(shapes)}; "
                         f"one program needs them equal")
    devices = list(jax.devices() if devices is None else devices)
    data = config.mesh_data or min(len(devices), len(clips))
    if not 0 < data <= len(devices):
        raise ValueError(f"mesh_data={config.mesh_data}: {len(devices)} devices")
    mesh = make_mesh(data, 1, devices=devices[:data])
    slots = -(-len(clips) // data) * data
    order = list(range(len(clips))) + [len(clips) - 1] * (slots - len(clips))
    if slots > len(clips):
        logging.warning("%d objects on a mesh of %d: the last object is computed %d more "
                        "times (dropped)", len(clips), data, slots - len(clips))
    num_gaussians = max(c.canonical.num_gaussians for c in clips)
    step_config = config.step
    capacity = tile_capacity_needed(clips, train_views, step_config.batch_size)
    if capacity > step_config.tile_capacity:
        logging.info("tile capacity raised from %d to %d (what the static asset needs x%.1f)",
                     step_config.tile_capacity, capacity, CAPACITY_MARGIN)
        step_config = dataclasses.replace(step_config, tile_capacity=capacity)

    tx = make_optimizer(config.optimizer)
    sharding = lambda tree: object_sharding(mesh, tree)
    targets = stack([make_target(clips[i], train_views, num_gaussians,
                                 neighbours=config.neighbours,
                                 priors=None if priors is None else priors[i])
                     for i in order])
    targets = jax.device_put(targets, sharding(targets))

    def fresh():
        return stack([init_state(object_key(config.seed, clips[i].name), clips[i].canonical,
                                 config.motion, tx, num_gaussians) for i in order])

    description = json.loads(json.dumps({  # as JsonRestore gives it back: lists, not tuples
        "clips": [clips[i].name for i in order], "num_gaussians": num_gaussians,
        "motion": dataclasses.asdict(config.motion)}))
    manager = make_manager(os.path.join(workdir, "checkpoints"),
                           every_steps=config.checkpoint_every,
                           max_to_keep=config.max_to_keep, async_save=True,
                           item_names=("state", "run"))
    if manager.latest_step() is not None:
        abstract = jax.eval_shape(fresh)
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract, sharding(abstract))
        restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), run=ocp.args.JsonRestore()))
        if restored["run"] != description:
            raise ValueError(f"{manager.directory} holds a run of {restored['run']}, not "
                             f"{description}: use another --workdir")
        states = restored["state"]
        logging.info("restored iteration %d from %s", manager.latest_step(), manager.directory)
    else:
        states = jax.device_put(fresh(), sharding(jax.eval_shape(fresh)))
    step = int(jax.device_get(states.step)[0])
    train_step = make_step(step_config, tx, mesh, extra_loss)
    frozen = jax.device_put({} if frozen is None else frozen,
                            NamedSharding(mesh, PartitionSpec()))

    end = config.iterations if config.stop_after is None else min(config.iterations,
                                                                    config.stop_after)
    writer = SummaryWriter(os.path.join(workdir, "tb"))
    history: list[tuple[int, dict[str, np.ndarray]]] = []
    pending = None
    stopped, start = "done", time.perf_counter()
    bar = tqdm(total=config.iterations, initial=step, unit="it", desc="stage two")

    overflowed = 0

    def settle():
        nonlocal pending, overflowed
        if pending is None:
            return
        done, metrics = pending
        pending = None
        host = {k: np.asarray(v)[:len(clips)] for k, v in jax.device_get(metrics).items()}
        history.append((done, host))
        bar.update(1)
        bar.set_postfix(loss=f"{host['loss'].mean():.4g}", psnr=f"{host['psnr'].mean():.2f}")
        overflowed += bool(host["overflow"].max() > 0)
        if host["overflow"].max() > 0 and overflowed in (1, 10, 100):
            logging.warning("iteration %d: tiles overflowed (capacity %d) in %s (%d "
                            "iterations so far): raise --config.tile_capacity", done,
                            step_config.tile_capacity,
                            [n for n, o in zip(names, host["overflow"]) if o > 0],
                            overflowed)
        if host["finite"].min() < 1:
            logging.warning("iteration %d: non-finite loss or gradient for %s; the update "
                            "was skipped", done,
                            [n for n, f in zip(names, host["finite"]) if f < 1])
        if done % config.log_every == 0 or done == end:
            for name, i in zip(names, range(len(clips))):
                for key, value in host.items():
                    writer.add_scalar(f"{name}/{key}", float(value[i]), done)
            logging.info("iteration %d: %s", done, " ".join(
                f"{k} {v.mean():.4g}" for k, v in sorted(host.items())))

    with Preemption() as preemption:
        try:
            while step < end:
                if preemption.requested:
                    stopped = "sigterm"
                    break
                states, metrics = train_step(states, targets, frozen)
                step += 1
                settle()
                pending = (step, metrics)
                if step % config.checkpoint_every == 0:
                    manager.save(step, args=_save_args(states, description))
            settle()
            if stopped == "done" and end < config.iterations:
                stopped = "stop_after"
            if manager.latest_step() != step:
                manager.save(step, args=_save_args(states, description), force=True)
        finally:
            manager.wait_until_finished()
            bar.close()
            writer.close()
    fields = []
    for i, clip in enumerate(clips):
        field = jax.device_get(unstack(states.field, i))
        fields.append(field.replace(sh4d=field.sh4d[:clip.canonical.num_gaussians]))
    return FitResult(fields, step, stopped, history, time.perf_counter() - start)


def _save_args(states, description: dict) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(states),
                              run=ocp.args.JsonSave(description))
