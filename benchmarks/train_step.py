"""Stage One train step throughput: `t4a_jax.train`'s jitted update, timed alone.

    python benchmarks/train_step.py                       # configs/stage1.py:tiny, CPU
    python benchmarks/train_step.py --full --batch 1      # the paper's MV-VDM (GPU)
    python benchmarks/train_step.py --full --override remat=False --steps 5

The models are random (`--full`: the SD1.5-sized MV-VDM of `configs/unet.py:mvvdm`,
SD1.5 VAE, CLIP ViT-L/14 text and ViT-H/14 image towers; default: the tiny variant's);
batches are random arrays of the config's shapes, made once on the host and sharded
over the mesh (data loading is not timed). Reported: compile time, median step time
over `--steps` steps after one warm-up, steps/s, samples/s (objects/s), and on
accelerators the peak device memory and achieved TFLOP/s (XLA's cost analysis of the
compiled step over the measured time). Rows: the mesh over all devices (`data` = all)
and, where there are several, the one-device baseline run in the same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import numpy as np

from t4a_jax.config_files import get_config
from t4a_jax.data.loader import shard_batch
from t4a_jax.diffusion import make_schedule
from t4a_jax.sharding import make_mesh
from t4a_jax.training.objective import StageOneLossConfig
from t4a_jax.training import state as ts


def random_batch(config, batch: int, tokenizer) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    d, n = config.data, 225
    v, f, s = d.num_views, d.num_frames, d.size
    host = {"frames": rng.uniform(-1, 1, (batch, v, f, s, s, 3)).astype(np.float32),
            "cameras": rng.normal(size=(batch, v, 16)).astype(np.float32),
            "tracks": rng.uniform(0, s, (batch, v, f, n, 2)).astype(np.float32),
            "visibility": rng.uniform(size=(batch, v, f, n)) > 0.2,
            "query_valid": rng.uniform(size=(batch, v, n)) > 0.5,
            "prompt": np.array(["a creature walks forward"] * batch)}
    return ts.device_batch(host, tokenizer, {})


def run(config, devices, steps: int) -> dict[str, float]:
    mesh = make_mesh(-1, 1, devices=devices)
    models = ts.random_models(config, mesh)
    tx, lr = ts.make_optimizer(config)
    parts = ts.init_state(models, tx, config.seed, mesh, ts.trainable_of(config))
    step = ts.make_train_step(parts, tx, lr, make_schedule(config.schedule),
                              StageOneLossConfig.from_config_dict(config.loss),
                              (config.data.size,) * 2, config.grad_accum_steps)
    batch = shard_batch(random_batch(config, config.global_batch_size, models.tokenizer), mesh)
    start = time.perf_counter()
    compiled = step.lower(parts.state, parts.frozen, batch).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float((cost or {}).get("flops", 0.0))
    state = parts.state
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        state, metrics = step(state, parts.frozen, batch)
        jax.block_until_ready(metrics["loss"])
        if i:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    row = {"devices": len(devices), "compile_s": compile_s, "step_s": step_s,
           "steps_per_s": 1 / step_s, "samples_per_s": config.global_batch_size / step_s,
           "loss": float(metrics["loss"])}
    stats = devices[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        row["peak_GiB"] = stats["peak_bytes_in_use"] / 2 ** 30
    if flops:
        row["TFLOP/s"] = flops / step_s / 1e12     # per device (the program is per shard)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the paper's config (random)")
    parser.add_argument("--batch", type=int, default=None, help="global batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--override", action="append", default=[],
                        help="config key=value (python literal), e.g. remat=False")
    args = parser.parse_args()
    config = get_config("stage1", None if args.full else "tiny")
    if args.full:
        config.random_init.encoders = "full"
    for item in args.override:
        key, value = item.split("=", 1)
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        import ast
        node[last] = ast.literal_eval(value)
    devices = jax.devices()
    if args.batch:
        config.global_batch_size = args.batch
    elif args.full:
        config.global_batch_size = len(devices)
    rows = [("all", run(config, devices, args.steps))]
    if len(devices) > 1:
        one = config.copy_and_resolve_references()
        one.global_batch_size = max(1, config.global_batch_size // len(devices))
        rows.append(("one device", run(one, devices[:1], args.steps)))
    kind = devices[0].device_kind
    print(f"# train step: {'paper (random weights)' if args.full else 'tiny'} config, "
          f"{config.data.num_views} views x {config.data.num_frames} frames at "
          f"{config.data.size}px, {kind}, compute {config.compute_dtype}, "
          f"remat {config.remat}, os.cpu_count {os.cpu_count()}")
    keys = ["devices", "compile_s", "step_s", "steps_per_s", "samples_per_s", "peak_GiB",
            "TFLOP/s", "loss"]
    print("| mesh | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in rows:
        print(f"| {name} | " + " | ".join(
            f"{row[k]:.4g}" if isinstance(row.get(k), float) else str(row.get(k, "-"))
            for k in keys) + " |")


if __name__ == "__main__":
    main()
