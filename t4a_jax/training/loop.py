"""Stage One training as a job: `train(config, workdir)`, the body of
`python -m t4a_jax.train` and of the animate job's tiny Stage One (see `t4a_jax.train`
for what a run does and writes).
"""


from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
from jax.sharding import Mesh
import numpy as np
from absl import logging
from flax import nnx

from t4a_jax.checkpoints import Preemption
from t4a_jax.data import synthetic
from t4a_jax.data.loader import MVVideoLoader, shard_batch
from t4a_jax.data.mvvideo import MVVideoConfig
from t4a_jax.diffusion import make_schedule
from t4a_jax.models.bundle import SamplingDefaults
from t4a_jax.models.vae import AutoencoderKL
from t4a_jax.pipeline import sample_multiview_video
from t4a_jax.sharding import make_mesh, named_shardings
from t4a_jax.training.objective import StageOneLossConfig
from t4a_jax.training import checkpointing, observe
from t4a_jax.training import state as train_state
from t4a_jax.training.config import validate
from t4a_jax.training.vae_fit import cached_autoencoder

FIT_FRAMES = 256     # frames of the training set the VAE is fitted to


class NonFiniteLoss(RuntimeError):
    """A step produced a non-finite loss or gradient (and the config does not skip)."""


def prepare_data(config: ml_collections.ConfigDict, workdir: str
                 ) -> tuple[MVVideoConfig, str | None]:
    """(training data config, held-out root or None); generates the synthetic sets into
    WORKDIR/data/{train,heldout} first when `config.synthetic.enabled` (resumable)."""
    d, root, heldout = config.data, config.data.root, config.data.heldout_root
    if config.synthetic.enabled:
        s = config.synthetic
        needed = d.max_start + (d.num_frames - 1) * d.frame_stride + 1
        if s.frames < needed:
            raise ValueError(f"config.synthetic.frames={s.frames} < {needed} frames a clip "
                             f"needs (data.num_frames, frame_stride, max_start)")
        root, heldout = (os.path.join(workdir, "data", n) for n in ("train", "heldout"))
        if jax.process_index() == 0:
            for out, count, seed in ((root, s.num_objects, config.seed),
                                     (heldout, s.heldout_objects, config.seed + 1)):
                spec = synthetic.DatasetSpec(views=d.num_views, frames=s.frames, size=d.size,
                                             seed=seed, num_gaussians=s.num_gaussians)
                logging.info(synthetic.generate_dataset(out, count, spec))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("t4a_jax.train synthetic data")
    data = MVVideoConfig(root=root, size=d.size, num_views=d.num_views,
                         num_frames=d.num_frames, frame_stride=d.frame_stride,
                         max_start=d.max_start, tracks_dir=d.tracks_dir,
                         exact_tracks_fallback=d.exact_tracks_fallback,
                         missing_tracks=d.missing_tracks)
    return data, heldout


def fitted_vae(config: ml_collections.ConfigDict, vae: AutoencoderKL, data: MVVideoConfig,
               workdir: str, mesh: Mesh) -> AutoencoderKL:
    """The random `vae` fitted to frames of the training set (`training.vae_fit`), once:
    cached in WORKDIR/vae_fit and read back on resume; placed on `mesh`."""
    def frames() -> np.ndarray:
        loader = MVVideoLoader(data, config.global_batch_size, seed=config.seed + 1,
                               num_workers=0)
        try:
            batches, count = [], 0
            while count < FIT_FRAMES:
                batch = next(loader)["frames"]
                batches.append(batch.reshape((-1,) + batch.shape[-3:]))
                count += len(batches[-1])
        finally:
            loader.close()
        return np.concatenate(batches)[:FIT_FRAMES]

    f = config.vae_fit
    fitted, report = cached_autoencoder(
        vae, frames, os.path.join(workdir, "vae_fit"), steps=f.steps,
        batch_size=f.batch_size, lr=f.lr, kl_weight=f.kl_weight, seed=config.seed,
        progress=jax.process_index() == 0)
    logging.info("VAE fitted to the training frames: PSNR %.1f dB", report["psnr"])
    state = nnx.state(fitted)
    nnx.update(fitted, jax.device_put(state, named_shardings(state, mesh)))
    return fitted


def train(config: ml_collections.ConfigDict, workdir: str,
          devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
    """Run (or resume) the training in `workdir`; returns a summary: final `step`,
    `history` [(step, host metrics)], `checkpoint` (latest saved step), `skipped`
    (non-finite updates skipped), `stopped` ('done', 'stop_after' or 'sigterm')."""
    # 1. Config, processes, mesh. Everything that can be wrong fails here.
    if config.distributed and jax.process_count() == 1:
        jax.distributed.initialize()
    devices = list(jax.devices() if devices is None else devices)
    validate(config, device_count=len(devices), process_count=jax.process_count())
    loss_config = StageOneLossConfig.from_config_dict(config.loss)
    schedule = make_schedule(config.schedule)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, devices=devices)
    logging.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), len(devices),
                 jax.process_count())

    # 2. Data: an endless, resumable stream of this process's rows of each global batch.
    data, heldout_root = prepare_data(config, workdir)
    loader = MVVideoLoader(data, config.global_batch_size, seed=config.seed,
                           num_workers=config.data.num_workers,
                           read_threads=config.data.read_threads,
                           prefetch_batches=config.data.prefetch_batches)

    # 3. Models, split once into graphdefs / trainable params / frozen rest, on the mesh.
    models = train_state.build_models(config, mesh)
    if config.vae_fit.steps:
        models = dataclasses.replace(models, vae=fitted_vae(config, models.vae, data, workdir,
                                                            mesh))
    unet_config = models.unet.config
    factor = models.vae.config.downsample_factor * unet_config.downsample_factor
    if data.size % factor:
        raise ValueError(f"config.data.size={data.size} must be a multiple of {factor} "
                         f"(VAE x U-Net downsampling)")
    tx, lr_schedule = train_state.make_optimizer(config)
    trainable = train_state.trainable_of(config)
    parts = train_state.init_state(models, tx, config.seed, mesh, trainable)
    logging.info("U-Net: %d trainable, %d frozen parameters",
                 train_state.count_params(parts.state["params"]),
                 train_state.count_params(parts.frozen["unet"]))

    # 4. Init or restore (params, optimizer state, step, RNG, data position).
    manager = checkpointing.make_manager(workdir, config)
    state = parts.state
    if manager.latest_step() is not None:
        state, data_state = checkpointing.restore(manager, train_state.abstract_state(parts))
        loader.set_state(data_state)
        logging.info("restored step %d from %s", int(state["step"]), manager.directory)
    step = int(state["step"])

    # 5. The jitted update (state donated).
    train_step = train_state.make_train_step(parts, tx, lr_schedule, schedule, loss_config,
                                             (data.size, data.size), config.grad_accum_steps)
    heldout = (observe.heldout_examples(heldout_root, data, config.sample.num_objects)
               if heldout_root and config.sample.every_steps else [])

    def sample_videos(state, step):
        unet = nnx.merge(parts.graphdefs["unet"], state["params"], parts.frozen["unet"])
        videos = sample_multiview_video(
            unet, models.vae, models.text_encoder, models.tokenizer,
            np.stack([(e["frames"][:, 0] + 1) / 2 for e in heldout]),
            np.stack([e["cameras"] for e in heldout]) if unet_config.use_camera_embedding
            else None, [str(e["prompt"]) for e in heldout], image_encoder=models.image_encoder,
            schedule=schedule, num_frames=data.num_frames, num_steps=config.sample.num_steps,
            guidance_scale=config.sample.guidance_scale, eta=config.sample.eta, seed=config.seed)
        if jax.process_index() == 0:
            paths = observe.write_samples(np.asarray(videos), heldout, step, workdir,
                                          config.sample.fps, progress.writer)
            logging.info("samples at step %d: %s", step, ", ".join(paths))

    # 6. The loop. Metrics of step s are read after step s + 1 is dispatched.
    end = config.total_steps if config.stop_after is None else min(config.total_steps,
                                                                    config.stop_after)
    progress = observe.Progress(workdir, config.total_steps, config.global_batch_size, step,
                                enabled=jax.process_index() == 0)
    token_cache: dict[str, np.ndarray] = {}
    pending: tuple | None = None
    skipped, stopped, start = 0, "done", time.perf_counter()

    def settle():
        """Fetch the pending step's metrics: log them, stop or count a non-finite one."""
        nonlocal pending, skipped
        if pending is None:
            return
        done_step, metrics, ids = pending
        pending = None
        host = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not host.pop("finite"):
            message = (f"non-finite loss {host['loss']} / grad norm {host['grad_norm']} at "
                       f"step {done_step} (batch {', '.join(ids)})")
            if not config.skip_nonfinite:
                raise NonFiniteLoss(f"{message}; the update was not applied; last good "
                                    f"checkpoint: step {manager.latest_step()} in "
                                    f"{manager.directory}")
            skipped += 1
            logging.warning("%s: update skipped (%d so far)", message, skipped)
        progress.add(done_step, host)
        if done_step % config.log_every == 0 or done_step == end:
            progress.flush(done_step)

    with Preemption() as preemption:
        try:
            while step < end:
                if preemption.requested:
                    stopped = "sigterm"
                    break
                host_batch = next(loader)
                ids = [f"{u}/{a}" for u, a in zip(host_batch["uid"], host_batch["anim"])]
                batch = shard_batch(train_state.device_batch(host_batch, models.tokenizer,
                                                             token_cache), mesh)
                state, metrics = train_step(state, parts.frozen, batch)
                step += 1
                settle()
                pending = (step, metrics, ids)
                if step % config.checkpoint.every_steps == 0:
                    settle()
                    checkpointing.save(manager, step, state, loader.get_state())
                if heldout and (step % config.sample.every_steps == 0):
                    settle()
                    sample_videos(state, step)
            settle()
            if step >= end and end < config.total_steps:
                stopped = "stop_after"
            if manager.latest_step() != step:
                checkpointing.save(manager, step, state, loader.get_state(), force=True)
            manager.wait_until_finished()
            if config.export_models:
                train_state.export_models(
                    models, state["params"], os.path.join(workdir, "models"),
                    SamplingDefaults(image_size=data.size, num_views=data.num_views,
                                     num_frames=data.num_frames,
                                     num_steps=config.sample.num_steps,
                                     guidance_scale=config.sample.guidance_scale),
                    trainable)
        finally:
            manager.wait_until_finished()
            loader.close()
            progress.close()
    wall = time.perf_counter() - start
    logging.info("stopped (%s) at step %d after %.1f s; checkpoint step %s in %s", stopped,
                 step, wall, manager.latest_step(), manager.directory)
    return {"step": step, "history": progress.history, "checkpoint": manager.latest_step(),
            "skipped": skipped, "stopped": stopped, "wall_s": wall}
