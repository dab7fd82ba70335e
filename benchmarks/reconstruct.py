"""Stage Two iteration time (`t4a_jax.reconstruction.step`), with the rasterizer's share
measured in the same run.

    python benchmarks/reconstruct.py                      # tiny: 2048 Gaussians, 4 x 4 at 64 px
    python benchmarks/reconstruct.py --paper --steps 3    # 50k Gaussians, 4 x 16 at 256 px
    python benchmarks/reconstruct.py --sds                # + the 4D-SDS phase (tiny models)
    python benchmarks/reconstruct.py --paper --sds --memory-only   # compile, report memory

The object is a procedural creature (`data.procedural`, `--gaussians` of them), its
"video" the static asset's renders in 4 ring views repeated over the frames (the
content does not change the work of a step). Rows:
- `step`: the whole jitted, donated Stage Two step (deform, render 4 views x T frames,
  L_rec, ARAP over the frames, Adam), median over `--steps` after one warm-up;
- `rasterizer`: forward + backward of `rasterize` alone on the same Gaussians and
  cameras (T x 4 renders), the baseline; its share of the step is printed;
- `sds step` (`--sds`): the second phase's step, 4D-SDS added (random Stage One models:
  `configs/stage1.py:tiny`'s, or with `--paper` the SD1.5-sized MV-VDM, VAE and CLIP
  towers in bf16; 4 random views x the frames at the image size);
Then the per-object wall time of `--iterations` iterations (compile included) at the
measured rates (750 reconstruction + 250 SDS iterations with `--sds`, as the paper).
`--memory-only` compiles the steps without running them (abstract models, nothing
allocated) and prints XLA's memory analysis: what one device needs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from t4a_jax.config_files import get_config
from t4a_jax.data import procedural
from t4a_jax.fourd import HexPlaneConfig, MotionConfig, OptimizerConfig, make_optimizer
from t4a_jax.reconstruction.clips import Clip
from t4a_jax.models import ModelBundle
from t4a_jax.models.clip import CLIPVisionConfig, CLIPVisionModelWithProjection
from t4a_jax.models.io import abstract_model
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import UNetConfig
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from t4a_jax.reconstruction.loop import tile_capacity_needed
from t4a_jax.reconstruction.priors import SDSConfig, SDSTerm
from t4a_jax.reconstruction.step import (StepConfig, init_state, make_step, make_target,
                                         stack)
from t4a_jax.render.rasterize import rasterize
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.sharding import make_mesh
from t4a_jax.training.state import random_models


def synthetic_clip(num_gaussians: int, size: int, frames: int) -> Clip:
    canonical = procedural.make_creature((0, 0), num_gaussians).gaussians
    views = ring_views(4, elevation=15.0, size=size)
    render = ViewRenderer(size, size, tile_capacity=2048)(canonical, views.viewmats, views.Ks)
    videos = np.repeat(np.rint(render.colors * 255).astype(np.uint8)[:, None], frames, 1)
    masks = np.repeat((render.alphas > 0.5)[:, None], frames, 1)
    return Clip("bench", "", videos, masks, views.viewmats, views.Ks,
                np.arange(4, dtype=np.int32), np.full(3, 0.498, np.float32), canonical, "",
                "", 8.0)


def timed(fn, steps: int) -> tuple[float, float]:
    """(first call incl. compile, median of `steps` more calls) in seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paper", action="store_true",
                        help="the paper's size: 50k Gaussians, 16 frames at 256 px, "
                             "HexPlane [100]^3 x 8, 16 channels")
    parser.add_argument("--gaussians", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--sds", action="store_true", help="time the 4D-SDS phase too")
    parser.add_argument("--memory-only", action="store_true",
                        help="compile only; print the memory analysis")
    args = parser.parse_args()
    n = args.gaussians or (50_000 if args.paper else 2048)
    size, frames = (256, 16) if args.paper else (64, 4)
    resolution = (100, 100, 100, 8) if args.paper else (32, 32, 32, 8)
    clip = synthetic_clip(n, size, frames)
    train = np.arange(4)
    step_config = StepConfig(frames_per_step=frames, arap_start=0,
                             tile_capacity=tile_capacity_needed([clip], train, 32))
    motion = MotionConfig(hexplane=HexPlaneConfig(resolutions=(resolution,)))
    tx = make_optimizer(OptimizerConfig())
    mesh = make_mesh(1, 1, devices=jax.devices()[:1])
    states = stack([init_state(jax.random.key(0), clip.canonical, motion, tx, n)])
    targets = stack([make_target(clip, train, n)])
    step = make_step(step_config, tx, mesh)
    steps = {"step": (step, {})}
    if args.sds:
        steps["sds step"] = sds_step(args.paper, step_config, tx, mesh, size, frames,
                                     clip.canonical, abstract=args.memory_only)
    if args.memory_only:
        for name, (fn, frozen) in steps.items():
            compiled = fn.lower(states, targets, frozen).compile()
            memory = compiled.memory_analysis()
            gib = lambda b: f"{b / 2 ** 30:.2f} GiB"
            print(f"{name}: arguments {gib(memory.argument_size_in_bytes)}, temporaries "
                  f"{gib(memory.temp_size_in_bytes)}, outputs "
                  f"{gib(memory.output_size_in_bytes)}")
        return
    results = {}
    for name, (fn, frozen) in steps.items():
        holder = {"states": states}

        def one_step(fn=fn, frozen=frozen, holder=holder):
            holder["states"], metrics = fn(holder["states"], targets, frozen)
            return metrics["loss"]

        results[name] = timed(one_step, args.steps)
        states = holder["states"]

    g = clip.canonical
    viewmats = jnp.broadcast_to(jnp.asarray(clip.viewmats), (frames, 4, 4, 4))
    ks = jnp.broadcast_to(jnp.asarray(clip.Ks), (frames, 4, 3, 3))

    @jax.jit
    def raster(means):
        def loss(means):
            colors, alphas, _ = rasterize(
                means, g.quats, g.scales, g.opacities, g.sh, viewmats, ks, size, size,
                sh_degree=g.sh_degree, backgrounds=jnp.full((frames, 4, 3), 0.498),
                tile_capacity=step_config.tile_capacity)
            return jnp.mean(colors) + jnp.mean(alphas)
        return jax.grad(loss)(means)

    results["rasterizer"] = timed(lambda: raster(g.means), args.steps)
    device = jax.devices()[0]
    print(f"Stage Two step on {device.platform} ({device.device_kind}), {n} Gaussians, "
          f"4 views x {frames} frames at {size}x{size}, tile capacity "
          f"{step_config.tile_capacity}")
    print(f"{'':12s} {'first call s':>12s} {'median s':>10s} {'it/s':>8s}")
    for name, (first, median) in results.items():
        print(f"{name:12s} {first:12.2f} {median:10.3f} {1 / median:8.2f}")
    print(f"rasterizer share of the reconstruction step: "
          f"{100 * results['rasterizer'][1] / results['step'][1]:.0f}%")
    wall = results["step"][0] + (args.iterations - 1) * results["step"][1]
    if args.sds:
        phase_two = args.iterations // 4
        wall = (results["step"][0] + results["sds step"][0]
                + (args.iterations - phase_two - 1) * results["step"][1]
                + (phase_two - 1) * results["sds step"][1])
    print(f"per object, {args.iterations} iterations: {wall / 60:.1f} min")


def sds_step(paper: bool, step_config: StepConfig, tx, mesh, size: int, frames: int,
             canonical, *, abstract: bool):
    """(the jitted SDS-phase step, its frozen networks) with random Stage One models."""
    config = get_config("stage1", None if paper else "tiny")
    if abstract:          # shapes only: the paper's networks without their weights
        unet_config = dataclasses.replace(
            UNetConfig.from_config_dict(config.random_init.unet),
            dtype=jnp.bfloat16 if paper else jnp.float32)
        vae_config = VAEConfig() if paper else VAEConfig.tiny()
        bundle = ModelBundle(
            unet=abstract_model(lambda rngs: UNet(unet_config, rngs=rngs)),
            vae=abstract_model(lambda rngs: AutoencoderKL(vae_config, rngs=rngs)),
            text_encoder=None, tokenizer=None, image_encoder=None)
        if unet_config.use_ip_adapter:
            vision = (dataclasses.replace(CLIPVisionConfig(),
                                          projection_dim=unet_config.image_embed_dim)
                      if paper else dataclasses.replace(
                          CLIPVisionConfig.tiny(), projection_dim=unet_config.image_embed_dim))
            bundle = dataclasses.replace(bundle, image_encoder=abstract_model(
                lambda rngs: CLIPVisionModelWithProjection(vision, rngs=rngs)))
    else:
        config.random_init.encoders = "full" if paper else "tiny"
        config.compute_dtype = "bfloat16" if paper else "float32"
        models = random_models(config, mesh)
        bundle = ModelBundle(unet=models.unet, vae=models.vae, text_encoder=None,
                             tokenizer=None, image_encoder=models.image_encoder)
    radius = 1.1 * float(np.linalg.norm(np.asarray(canonical.means), axis=-1).max())
    term = SDSTerm.build(bundle, "", SDSConfig(start=0, frames=frames, size=size), radius)
    return make_step(step_config, tx, mesh, term.loss), term.frozen


if __name__ == "__main__":
    main()
