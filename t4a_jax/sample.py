"""`python -m t4a_jax.sample`: Stage One inference, a static object + a prompt -> a
multi-view video.

    python -m t4a_jax.sample --checkpoint ckpt/mvvdm --object model.ply \
        --prompt "a dog is running" [--out out/sample.mp4] [--per_view] \
        [--views 4 --frames 16 --size 256 --steps 25 --guidance 7.5 --seed 0 \
         --elevation 15 --azimuth 0]

Loads the model directory (`t4a_jax.models.load_bundle`: U-Net, VAE, text encoder,
tokenizer, and the image encoder of an IP-Adapter U-Net) and the object
(`turntable.load_asset`: a 3DGS `.ply`, a mesh, or `builtin` for the built-in object),
renders its V condition views on the Animate3D orbit (`render_condition_views`: azimuths
`azimuth + 360 k / V`), samples F frames per view (`sample_multiview_video`, frame 0 the
condition render) and writes one video [F, S, V*S, 3] with the views side by side, left
to right in azimuth order; `--per_view` adds one video per view, `<stem>_view<k><ext>`
beside `--out`. Videos are `.mp4` or `.gif`, each written atomically. `main(argv)` runs
it in-process and returns the exit status (1 with `error: ...` on stderr on failure).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from typing import Iterator, Sequence

import numpy as np

from t4a_jax.diffusion.pipeline import render_condition_views, sample_multiview_video
from t4a_jax.models import ModelBundle, load_bundle
from t4a_jax.turntable import load_asset
from t4a_jax.video import VIDEO_EXTENSIONS, write_video

BUILTIN = "builtin"  # --object value for `render.builtin.builtin_object`


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m t4a_jax.sample",
        description="A multi-view video of a static object from a text prompt (Stage One).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="model directory (unet/, vae/, text_encoder/, tokenizer/, "
                             "image_encoder/): python -m tools.convert_weights output or "
                             "the training program's WORKDIR/models")
    parser.add_argument("--object", required=True,
                        help=f"a 3DGS .ply, a mesh (.obj, .glb, .gltf, .ply with faces) or "
                             f"'{BUILTIN}'")
    parser.add_argument("--prompt", required=True, help="what the object does")
    parser.add_argument("--out", default="out/sample.mp4",
                        help=f"video with the views side by side "
                             f"({' or '.join(VIDEO_EXTENSIONS)})")
    parser.add_argument("--per_view", action="store_true",
                        help="also write one video per view, <stem>_view<k><ext>")
    parser.add_argument("--views", type=_positive, default=4, help="V, evenly spaced in azimuth")
    parser.add_argument("--frames", type=_positive, default=16,
                        help="F per view, the condition frame included")
    parser.add_argument("--size", type=_positive, default=256, help="square frames, pixels")
    parser.add_argument("--steps", type=_positive, default=25, help="DDIM steps")
    parser.add_argument("--guidance", type=float, default=7.5,
                        help="classifier-free guidance scale (1: none)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--elevation", type=float, default=15.0, help="degrees")
    parser.add_argument("--azimuth", type=float, default=0.0,
                        help="azimuth of the first view, degrees")
    parser.add_argument("--fps", type=float, default=8.0,
                        help="frame rate of the videos (MV-Video's 24 fps at stride 3)")
    parser.add_argument("--tile_capacity", type=_positive, default=1024,
                        help="Gaussians per 16x16 tile when rendering the condition views")
    parser.add_argument("--mesh_samples", type=_positive, default=20000,
                        help="Gaussians sampled on a mesh's triangles")
    parser.add_argument("--asset_seed", type=int, default=0,
                        help="seed of the built-in object and of mesh sampling")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def check_size(size: int, bundle: ModelBundle) -> None:
    """Raise ValueError naming `size` unless latents of the VAE fit the U-Net: a multiple
    of the VAE's times the U-Net's downsampling factor."""
    vae_factor = bundle.vae.config.downsample_factor
    unet_factor = bundle.unet.config.downsample_factor
    if size % (vae_factor * unet_factor):
        raise ValueError(f"--size {size} must be a multiple of {vae_factor * unet_factor} "
                         f"(VAE downsampling {vae_factor} x U-Net downsampling "
                         f"{unet_factor})")


def tile_views(video: np.ndarray) -> np.ndarray:
    """[V, F, H, W, 3] -> [F, H, V * W, 3]: the views side by side, view 0 leftmost."""
    v, f, h, w, c = video.shape
    return video.transpose(1, 2, 0, 3, 4).reshape(f, h, v * w, c)


def view_paths(out: str, num_views: int) -> list[str]:
    """The `--per_view` files: `<stem>_view<k><ext>` beside `out`."""
    stem, ext = os.path.splitext(out)
    return [f"{stem}_view{k}{ext}" for k in range(num_views)]


@contextlib.contextmanager
def _timed(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"{what} in {time.perf_counter() - start:.1f} s", flush=True)


def run(args: argparse.Namespace) -> list[str]:
    """Load, render, sample and write (see the module docstring); returns the paths
    written. Raises ValueError / OSError naming the bad flag, file or directory."""
    if os.path.splitext(args.out)[1].lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"--out {args.out}: the extension must be one of "
                         f"{', '.join(VIDEO_EXTENSIONS)}")
    if args.frames < 2:
        raise ValueError(f"--frames {args.frames} must be >= 2 (frame 0 is the condition)")
    with _timed(f"loaded the object {args.object}"):
        gaussians = load_asset("" if args.object == BUILTIN else args.object,
                               mesh_samples=args.mesh_samples, seed=args.asset_seed)
    with _timed(f"loaded the models from {args.checkpoint}"):
        bundle = load_bundle(args.checkpoint)
    check_size(args.size, bundle)
    with _timed(f"rendered {args.views} condition views of {args.size}x{args.size}"):
        images, cameras = render_condition_views(
            gaussians, num_views=args.views, elevation=args.elevation,
            azimuth_start=args.azimuth, size=args.size, tile_capacity=args.tile_capacity)
    use_cameras = bundle.unet.config.use_camera_embedding
    with _timed(f"sampled {args.views} views x {args.frames} frames, {args.steps} steps "
                f"(compilation included)"):
        video = np.asarray(sample_multiview_video(
            bundle.unet, bundle.vae, bundle.text_encoder, bundle.tokenizer, images[None],
            cameras[None] if use_cameras else None, [args.prompt],
            image_encoder=bundle.image_encoder if bundle.unet.config.use_ip_adapter else None,
            num_frames=args.frames, num_steps=args.steps, guidance_scale=args.guidance,
            seed=args.seed))[0]                                     # [V, F, S, S, 3]
    outputs = {args.out: tile_views(video)}
    if args.per_view:
        outputs.update(zip(view_paths(args.out, args.views), video))
    with _timed(f"wrote {len(outputs)} video(s)"):
        directory = os.path.dirname(args.out)
        if directory:
            os.makedirs(directory, exist_ok=True)
        for path, frames in outputs.items():
            write_video(path, frames, fps=args.fps)
            print(f"  {path}: {len(frames)} frames of {frames.shape[1]}x{frames.shape[2]} "
                  f"(HxW)")
    return list(outputs)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    args = parse_args(argv)
    try:
        run(args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
