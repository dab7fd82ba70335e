"""U-Net with motion modules: the NNX `UNet` beside diffusers' PyTorch `UNetMotionModel`.

    python benchmarks/unet.py                                  # tiny config, 2 x 8 x 32x32
    python benchmarks/unet.py --batch 4 --frames 16 --size 32 --iters 5
    python benchmarks/unet.py --full                           # sd15, forward only
    python benchmarks/unet.py --profile 25                     # + where the time goes

Both networks have the same config (`configs/unet.py:tiny`, or `:sd15` with `--full`) and
the same random weights: the PyTorch model is built first, saved with `save_pretrained`
and converted with `tools.convert_weights.unet`. Inputs: latents [N, F, H, W, 4] (N =
object-views, PyTorch gets [N, 4, F, H, W]), one timestep and one text-token sequence
[N, tokens, D] per object-view.

Timed: forward, and forward + backward of a mean-squared loss against a random target
w.r.t. all parameters. JAX: `jax.jit` over the `nnx.split` state, `jax.value_and_grad`;
compile time is reported apart. PyTorch: eager, `torch.no_grad()` for the forward,
`loss.backward()` for forward + backward, `torch.set_num_threads` = the cores this
process may use (`--threads` to change). Each time is the median of `--iters` runs after
one warm-up. The sanity columns are max |JAX - PyTorch| of the forward output and of the
`conv_in` weight gradient. `--profile K` then prints the K largest items of each side's
forward + backward: XLA:CPU thunk thread time by JAX operation (`xla_profile`) and the
torch profiler's self CPU time by operator.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from flax import nnx

from xla_profile import format_table, op_times  # benchmarks/, the script's folder
from t4a_jax.config_files import get_config
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import UNetConfig
from tools.convert_weights.unet import convert_unet, load_diffusers_unet

REPO = pathlib.Path(__file__).resolve().parents[1]


def unet_config(variant: str) -> UNetConfig:
    """`configs/unet.py:<variant>` as a `UNetConfig`."""
    return UNetConfig.from_config_dict(get_config("unet", variant))


def torch_motion_unet(config: UNetConfig, std: float, seed: int) -> UNetMotionModel:
    """diffusers' `UNetMotionModel` of `config` (SD U-Net + MotionAdapter), every
    parameter drawn from N(0, std)."""
    unet = UNet2DConditionModel(
        in_channels=config.in_channels, out_channels=config.out_channels,
        block_out_channels=config.block_out_channels,
        down_block_types=config.down_block_types, up_block_types=config.up_block_types,
        layers_per_block=config.layers_per_block,
        attention_head_dim=config.num_attention_heads,  # SD1.5 naming: the head count
        cross_attention_dim=config.cross_attention_dim,
        transformer_layers_per_block=config.transformer_layers_per_block,
        use_linear_projection=config.use_linear_projection,
        norm_num_groups=config.norm_num_groups, norm_eps=config.norm_eps,
        flip_sin_to_cos=config.flip_sin_to_cos, freq_shift=config.freq_shift)
    adapter = MotionAdapter(
        block_out_channels=config.block_out_channels,
        motion_layers_per_block=config.layers_per_block,
        motion_transformer_layers_per_block=config.motion_transformer_layers,
        motion_num_attention_heads=config.motion_num_attention_heads,
        motion_norm_num_groups=config.motion_norm_num_groups,
        motion_max_seq_length=config.motion_max_seq_length,
        use_motion_mid_block=config.use_motion_mid_block)
    model = UNetMotionModel.from_unet2d(unet, adapter)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model.eval()


def convert(model: UNetMotionModel, expected: UNetConfig) -> UNet:
    """The PyTorch model through a diffusers folder and `tools.convert_weights.unet`."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        config, state = load_diffusers_unet(folder)
    if config != expected:
        raise RuntimeError(f"converted config {config} differs from {expected}")
    return convert_unet(state, config)


def median_ms(fn: Callable[[], object], iters: int) -> float:
    """Median wall time of `fn()` in ms after one warm-up call (`fn` must block)."""
    fn()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run(args: argparse.Namespace) -> None:
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    config = unet_config("sd15" if args.full else "tiny")
    n, f, s = args.batch, args.frames, args.size
    rng = np.random.default_rng(0)
    sample = rng.normal(size=(n, f, s, s, config.in_channels)).astype(np.float32)
    timesteps = rng.integers(0, 1000, size=n)
    context = rng.normal(size=(n, args.tokens, config.cross_attention_dim)).astype(np.float32)
    target = rng.normal(size=(n, f, s, s, config.out_channels)).astype(np.float32)

    start = time.perf_counter()
    torch_model = torch_motion_unet(config, args.init_std, seed=0)
    jax_model = convert(torch_model, config)
    count = sum(p.numel() for p in torch_model.parameters())
    print(f"config {'sd15' if args.full else 'tiny'}: {count:,} parameters; latents "
          f"[N={n}, F={f}, {s}x{s}, {config.in_channels}], "
          f"{args.tokens} text tokens; JAX on {jax.devices()[0].platform}, PyTorch on CPU with "
          f"{threads} threads; built and converted in {time.perf_counter() - start:.1f} s")

    # JAX: one jitted function of (params, inputs) for each measurement.
    graphdef, params, rest = nnx.split(jax_model, nnx.Param, ...)
    inputs = tuple(jnp.asarray(x) for x in (sample, timesteps, context))

    def forward(params, sample, timesteps, context):
        return nnx.merge(graphdef, params, rest)(sample, timesteps, context)

    def loss(params, sample, timesteps, context, target):
        return jnp.mean((forward(params, sample, timesteps, context) - target) ** 2)

    start = time.perf_counter()
    jax_forward = jax.jit(forward).lower(params, *inputs).compile()
    compile_forward = time.perf_counter() - start
    jax_out = np.asarray(jax_forward(params, *inputs))
    rows = {"jax": {"forward": median_ms(
        lambda: jax_forward(params, *inputs).block_until_ready(), args.iters)}}
    compile_backward = None
    if not args.full:
        start = time.perf_counter()
        jax_step = jax.jit(jax.value_and_grad(loss)).lower(params, *inputs, target).compile()
        compile_backward = time.perf_counter() - start
        _, grads = jax_step(params, *inputs, target)
        jax_grad = np.asarray(grads["conv_in"]["kernel"][...])              # HWIO
        rows["jax"]["backward"] = median_ms(
            lambda: jax.block_until_ready(jax_step(params, *inputs, target)), args.iters)

    # PyTorch: the same call in diffusers' layout.
    t_sample = torch.from_numpy(sample).permute(0, 4, 1, 2, 3).contiguous()
    t_steps = torch.from_numpy(timesteps)
    t_context = torch.from_numpy(context).repeat_interleave(f, dim=0)         # [N*F, L, D]
    t_target = torch.from_numpy(target).permute(0, 4, 1, 2, 3).contiguous()

    def torch_forward():
        with torch.no_grad():
            return torch_model(t_sample, t_steps, t_context).sample

    def torch_step():
        torch_model.zero_grad(set_to_none=True)
        out = torch_model(t_sample, t_steps, t_context).sample
        ((out - t_target) ** 2).mean().backward()

    torch_out = torch_forward().permute(0, 2, 3, 4, 1).numpy()
    rows["torch"] = {"forward": median_ms(torch_forward, args.iters)}
    diff_out = float(np.abs(jax_out - torch_out).max())
    diff_grad = None
    if not args.full:
        torch_step()
        torch_grad = torch_model.conv_in.weight.grad.permute(2, 3, 1, 0).numpy()  # OIHW->HWIO
        diff_grad = float(np.abs(jax_grad - torch_grad).max())
        rows["torch"]["backward"] = median_ms(torch_step, args.iters)

    print(f"JAX compile: forward {compile_forward:.1f} s"
          + (f", forward+backward {compile_backward:.1f} s" if compile_backward else ""))
    print(f"output scale max|out| = {np.abs(torch_out).max():.3g}"
          + (f", conv_in grad scale {np.abs(torch_grad).max():.3g}" if diff_grad else ""))
    fmt = lambda v: "-" if v is None else f"{v:.1f}"
    diff = lambda v: "-" if v is None else f"{v:.2e}"
    print("\n| impl  | forward ms | fwd+bwd ms | max|Δ out| | max|Δ grad conv_in| |")
    print("|-------|-----------:|-----------:|-----------:|--------------------:|")
    for impl, label in (("jax", "JAX"), ("torch", "torch")):
        row = rows[impl]
        print(f"| {label:<5} | {fmt(row['forward']):>10} | {fmt(row.get('backward')):>10} "
              f"| {diff(diff_out) if impl == 'jax' else 'ref':>10} "
              f"| {diff(diff_grad) if impl == 'jax' else 'ref':>19} |")
    if args.profile and not args.full:
        print("\nJAX forward + backward, XLA:CPU thunks (thread ms per step):\n")
        print(format_table(op_times(jax_step, (params, *inputs, target)), top=args.profile))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                torch_step()
        print("\nPyTorch forward + backward, profiler (self CPU time over 2 steps):\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2, help="object-views N (B*V)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--tokens", type=int, default=77, help="text tokens per object-view")
    parser.add_argument("--iters", type=int, default=2, help="timed runs per measurement")
    parser.add_argument("--threads", type=int, default=0,
                        help="PyTorch threads (default: the cores this process may use, "
                             "which XLA's CPU pool uses too)")
    parser.add_argument("--init-std", type=float, default=0.05,
                        help="std of the random weights")
    parser.add_argument("--profile", type=int, default=0, metavar="K",
                        help="print the K largest items of both forward+backward profiles")
    parser.add_argument("--full", action="store_true",
                        help="the sd15 config, forward only (about 20 GB of host memory: "
                             "both models, the saved folder and the loaded state dict)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
