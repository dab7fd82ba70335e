"""Rasterizer throughput: `t4a_jax.render.rasterize` beside a dense JAX evaluation.

    python benchmarks/rasterize.py                       # the full grid of the issue
    python benchmarks/rasterize.py --gaussians 100000 --sizes 256 --cameras 1
    python benchmarks/rasterize.py --memory-only --gaussians 100000 --sizes 256 --cameras 64

For every (N Gaussians, image size, cameras) it prints forward ms, forward+backward ms
and the compiled peak temporary memory of the tiled rasterizer, and the same for the
dense baseline: every Gaussian evaluated at every pixel in global depth order (same
projection, same compositing rule), computed in pixel chunks so that it fits in memory,
skipped when it would take more than `--dense-budget` pair evaluations.

The scene is object-like: Gaussians on the surfaces of a few ellipsoids inside the unit
sphere, sized to the surface spacing, viewed from an orbit at distance 3 (fovy 40).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from t4a_jax.render import covariance_3d, orbit_cameras, rasterize
from t4a_jax.render.composite import MAX_ALPHA, TRANSMITTANCE_EPS
from t4a_jax.render.projection import ALPHA_THRESHOLD, project


def object_scene(n: int, seed: int = 0) -> dict[str, jax.Array]:
    """N Gaussians on three ellipsoid surfaces (an object-like, mostly opaque shell)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [0.35, 0.0, 0.45], [-0.4, 0.1, -0.3]])
    radii = np.array([[0.6, 0.45, 0.5], [0.25, 0.25, 0.25], [0.2, 0.3, 0.25]])
    part = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    means = centres[part] + radii[part] * direction
    area = 4 * np.pi * 0.6 * 0.5
    spacing = np.sqrt(area / n)
    scales = spacing * np.exp(rng.normal(size=(n, 3)) * 0.3) * np.array([1.0, 1.0, 0.3])
    quats = rng.normal(size=(n, 4))
    opacities = rng.uniform(0.3, 1.0, size=n)
    colors = 0.5 + 0.5 * np.sin(means * 6.0 + part[:, None])
    scene = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    return {k: jnp.asarray(v, jnp.float32) for k, v in scene.items()}


def cameras(count: int, size: int):
    azimuth = np.linspace(0.0, 360.0, count, endpoint=False)
    viewmats, ks, _ = orbit_cameras(np.full(count, 15.0), azimuth, distance=3.0,
                                    fovy_degrees=40.0, width=size, height=size)
    return viewmats, ks


def dense_render(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                 pixel_chunk):
    """Every Gaussian at every pixel, globally depth-sorted, in chunks of pixels."""
    covars = covariance_3d(quats, scales)
    ys, xs = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
    pixels = jnp.stack([xs.ravel(), ys.ravel()], -1)
    pad = (-pixels.shape[0]) % pixel_chunk
    pixels = jnp.pad(pixels, ((0, pad), (0, 0))).reshape(-1, pixel_chunk, 2)

    def per_camera(viewmat, K):
        proj = project(means, covars, opacities, viewmat, K, width, height, 0.01, 1e10)
        order = jnp.argsort(jnp.where(proj.valid, proj.depths, jnp.inf))
        mean2d, conic = proj.means2d[order], proj.conics[order]
        opacity = jnp.where(proj.valid, opacities, 0.0)[order]
        rgb = colors[order]

        @jax.checkpoint
        def chunk(px):
            d = px[None, :, :] - mean2d[:, None, :]
            power = (0.5 * (conic[:, 0, None] * d[..., 0] ** 2 + conic[:, 2, None] * d[..., 1] ** 2)
                     + conic[:, 1, None] * d[..., 0] * d[..., 1])
            alpha = jnp.minimum(MAX_ALPHA, opacity[:, None] * jnp.exp(-power))
            alpha = jnp.where((alpha >= ALPHA_THRESHOLD) & (power >= 0), alpha, 0.0)
            through = jnp.cumprod(1.0 - alpha, axis=0)
            alpha = jnp.where(through > TRANSMITTANCE_EPS, alpha, 0.0)
            through = jnp.cumprod(1.0 - alpha, axis=0)
            in_front = jnp.concatenate([jnp.ones_like(through[:1]), through[:-1]], 0)
            return (alpha * in_front).T @ rgb

        image = jax.lax.map(chunk, pixels).reshape(-1, 3)[: width * height]
        return image.reshape(height, width, 3)

    return jax.vmap(per_camera)(viewmats, Ks)


def timed(fn, *args, repeats: int = 3) -> float:
    """Best of `repeats` timed calls after a warm-up call (one call when it is slow)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    if time.perf_counter() - start > 20.0:
        repeats = 1
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def peak_bytes(fn, *args) -> float:
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:
        return float("nan")
    return float(analysis.temp_size_in_bytes + analysis.output_size_in_bytes)


def measure(render, scene, viewmats, ks):
    """(forward ms, forward+backward ms, forward+backward peak temp bytes)."""
    weights = jax.random.normal(jax.random.key(0), render(scene, viewmats, ks).shape)

    def loss(s, v, k):
        return jnp.sum(render(s, v, k) * weights)

    forward = jax.jit(render)
    backward = jax.jit(jax.grad(loss))
    return (timed(forward, scene, viewmats, ks), timed(backward, scene, viewmats, ks),
            peak_bytes(jax.grad(loss), scene, viewmats, ks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gaussians", type=int, nargs="+", default=[10_000, 100_000, 500_000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--tile-capacity", type=int, default=0,
                        help="0: the smallest multiple of the batch size that is exact")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dense-budget", type=float, default=4e10,
                        help="skip the dense baseline above this many pair evaluations")
    parser.add_argument("--pixel-chunk", type=int, default=1024)
    parser.add_argument("--memory-only", action="store_true",
                        help="compile forward+backward and print its memory, run nothing")
    args = parser.parse_args()
    if args.memory_only:
        memory_table(args)
        return

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"jax {jax.__version__}")
    header = (f"{'N':>8} {'size':>5} {'cams':>4} {'cap':>5} | {'tiled fwd ms':>12} "
              f"{'tiled f+b ms':>12} {'tiled MB':>9} | {'dense fwd ms':>12} "
              f"{'dense f+b ms':>12} {'dense MB':>9} | {'f+b speed-up':>12}")
    print(header)
    print("-" * len(header))
    for n in args.gaussians:
        scene = object_scene(n)
        for size in args.sizes:
            for count in args.cameras:
                viewmats, ks = cameras(count, size)
                capacity = args.tile_capacity or _exact_capacity(scene, viewmats, ks, size,
                                                                 args.batch_size)

                def tiled(s, v, k, size=size, capacity=capacity):
                    return rasterize(**s, viewmats=v, Ks=k, width=size, height=size,
                                     tile_capacity=capacity, batch_size=args.batch_size)[0]

                t_fwd, t_bwd, t_mem = measure(tiled, scene, viewmats, ks)
                row = (f"{n:>8} {size:>5} {count:>4} {capacity:>5} | {t_fwd:>12.1f} "
                       f"{t_bwd:>12.1f} {t_mem / 2**20:>9.0f} |")
                if n * size * size * count <= args.dense_budget:
                    def dense(s, v, k, size=size):
                        return dense_render(**s, viewmats=v, Ks=k, width=size, height=size,
                                            pixel_chunk=args.pixel_chunk)
                    d_fwd, d_bwd, d_mem = measure(dense, scene, viewmats, ks)
                    row += (f" {d_fwd:>12.1f} {d_bwd:>12.1f} {d_mem / 2**20:>9.0f} |"
                            f" {d_bwd / t_bwd:>11.1f}x")
                else:
                    row += f" {'(skipped: over --dense-budget)':>36} |"
                print(row, flush=True)


def memory_table(args) -> None:
    """Compiled memory of one forward+backward of `rasterize` (nothing is executed)."""
    print(f"{'N':>8} {'size':>5} {'cams':>4} {'cap':>5} | {'args MB':>8} {'temp MB':>8} "
          f"{'out MB':>8}")
    for n in args.gaussians:
        scene = object_scene(n)
        for size in args.sizes:
            for count in args.cameras:
                viewmats, ks = cameras(count, size)
                capacity = args.tile_capacity or _exact_capacity(
                    scene, viewmats[:1], ks[:1], size, args.batch_size)

                def loss(s, v, k, size=size, capacity=capacity):
                    image = rasterize(**s, viewmats=v, Ks=k, width=size, height=size,
                                      tile_capacity=capacity, batch_size=args.batch_size)[0]
                    return jnp.sum(image)

                compiled = jax.jit(jax.grad(loss)).lower(scene, viewmats, ks).compile()
                m = compiled.memory_analysis()
                print(f"{n:>8} {size:>5} {count:>4} {capacity:>5} | "
                      f"{m.argument_size_in_bytes / 2**20:>8.0f} "
                      f"{m.temp_size_in_bytes / 2**20:>8.0f} "
                      f"{m.output_size_in_bytes / 2**20:>8.0f}", flush=True)


def _exact_capacity(scene, viewmats, ks, size, batch_size) -> int:
    _, _, meta = jax.jit(lambda s: rasterize(**s, viewmats=viewmats, Ks=ks, width=size,
                                             height=size, tile_capacity=batch_size,
                                             batch_size=batch_size))(scene)
    needed = int(jnp.max(meta["max_tile_count"]))
    return max(batch_size, -(-needed // batch_size) * batch_size)


if __name__ == "__main__":
    main()
