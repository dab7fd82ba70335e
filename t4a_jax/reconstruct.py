"""`python -m t4a_jax.reconstruct`: Stage Two, a multi-view video -> an animated 3D asset.

    python -m t4a_jax.reconstruct --config=configs/stage2.py --config.clip=DIR --workdir=OUT
    python -m t4a_jax.reconstruct --config=configs/stage2.py --config.clips=A,B --workdir=OUT
    python -m t4a_jax.reconstruct --config=configs/stage2.py:tiny --workdir=/tmp/s2_tiny

`run(config, workdir)` (`reconstruction.job`) reads and checks the clips (`reconstruction.clips`; with the
`tiny` variant it first generates a synthetic creature into WORKDIR/data), loads the
Stage One bundle when the priors need it (`config.stage_one`; the diffusion-feature
inputs are computed once per clip into WORKDIR/priors, `reconstruction.priors`), splits each
clip's views into `config.views` evenly spaced training views and held-out ones, fits
all objects' motion fields in one sharded program (`reconstruction.loop.fit`: progress
bar, TensorBoard in WORKDIR/tb, checkpoints in WORKDIR/checkpoints, resume, SIGTERM)
and writes each object's outputs (`reconstruction.outputs`: per-frame .ply files, the 4D
asset, the views and turntable videos, metrics.json) into WORKDIR for one clip or
WORKDIR/<name> for several (name: the clip's, '/' -> '_'). Library logs go to
WORKDIR/reconstruct.log; the console shows the progress bars and warnings. The config
keys are documented in `configs/stage2.py`.
"""

from __future__ import annotations

from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from t4a_jax.config_files import config_path
from t4a_jax.reconstruction.clips import ClipError
from t4a_jax.logs import start_command
from t4a_jax.reconstruction.job import run


def main(argv: Sequence[str]) -> None:
    """The command line: `error: ...` and exit status 1 for bad input."""
    workdir = start_command(argv, flags.FLAGS.workdir, "reconstruct.log")
    try:
        out = run(flags.FLAGS.config, workdir)
    except (ClipError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print("\n".join(out["outputs"]) or f"stopped ({out['stopped']}) at {out['step']}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", config_path("stage2"),
                                    "ml_collections config file (configs/stage2.py)")
    flags.DEFINE_string("workdir", None, "Output folder (checkpoints, logs, results).")
    app.run(main)
