"""Stage One training: fine-tune the MV-VDM with tracking supervision (paper Sec. 3.2).

    python -m t4a_jax.train --config=configs/stage1.py:tiny --workdir=/tmp/t4a_tiny
    python -m t4a_jax.train --config=configs/stage1.py --workdir=DIR \
        --config.init_from=ckpt/mvvdm --config.data.root=mvvideo --config.optimizer.lr=2e-6

The script reads top to bottom: check the config, build the mesh, the data, the models,
init or restore the train state, jit the update, loop (log, sample, checkpoint), save.

- Config: `configs/stage1.py` (variants: default = the paper's setup, `tiny` = a CPU
  demo on generated synthetic data); `training/config.py` rejects unknown keys, wrong
  types, meshes and batches that do not fit, a missing `init_from`, before anything
  compiles.
- Sharding: a ('data', 'fsdp') mesh from `config.mesh`; parameters, frozen weights and
  optimizer state placed by their `logical_axes` (`t4a_jax.sharding.FSDP_RULES`),
  batches split over 'data'. One jitted step with the train state donated
  (`training/state.py`, which also documents gradient accumulation: a `lax.scan` over
  micro-batches inside the step). Several hosts: `config.distributed=True` calls
  `jax.distributed.initialize()`; each process reads its rows of every global batch.
- Exact resume: a checkpoint (`training/checkpointing.py`) holds the step, trainable
  params, optimizer state, the base RNG key and the loader position. The step's key is
  `fold_in(base, step)` and the loader's stream is a pure function of (seed, position),
  so a run restored from step k replays steps k+1... bit for bit as if it had not
  stopped. On start, the latest checkpoint in WORKDIR/checkpoints is restored.
- SIGTERM (preemption) sets a flag; the loop saves at the next step boundary and exits
  normally. `config.stop_after` stops (and saves) at a given step, e.g. to split a run.
- Non-finite loss: the step leaves params untouched; the run stops with `NonFiniteLoss`
  naming the step, the batch's uid/anim ids and the last good checkpoint, or (with
  `config.skip_nonfinite`) logs, counts the skipped update and goes on.
- Output in WORKDIR: `train.log` (everything logged, e.g. the step lines and Orbax's
  messages; the console shows a progress bar and warnings), `checkpoints/`, `tb/` (TensorBoard: loss parts, lr, grad norm,
  throughput, sample videos), `samples/step_N.{mp4,gif,txt}` (held-out objects: rows =
  objects, columns = views), `models/` at the end (a model bundle,
  `t4a_jax.models.save_bundle`: the converter's pipeline layout, the U-Net with the
  trained weights, and `sampling.json` with the run's image size, views, frames and
  sampler settings, which `python -m t4a_jax.sample` takes as its defaults), `data/`
  (tiny: generated set).
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from t4a_jax.logs import start_command
from t4a_jax.training.loop import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file, e.g. configs/stage1.py:tiny", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, samples).")


def main(argv: Sequence[str]) -> None:
    if _CONFIG.value is None:
        raise app.UsageError("--config is required")
    train(_CONFIG.value, start_command(argv, _WORKDIR.value, "train.log"))


if __name__ == "__main__":
    app.run(main)
