"""`python -m t4a_jax.evaluate`: every method's multi-view videos and 4D assets scored
with the paper's metrics; WORKDIR/metrics.json and WORKDIR/tables.md.

    python -m t4a_jax.evaluate --config=configs/evaluate.py \
        --config.methods=ours=out/clips,animate3d=baselines/animate3d \
        --config.weights=weights --config.dataset=diffusion4d --workdir=out/eval
    python -m t4a_jax.evaluate --config=configs/evaluate.py:tiny --workdir=out/eval_tiny

The console shows the progress bar and warnings; library logs go to
WORKDIR/evaluate.log. A rerun scores only what changed (WORKDIR/cache). Bad input (a
method folder without outputs, missing weights) prints `error: ...` and exits with
status 1 before anything is scored.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from t4a_jax.config_files import config_path
from t4a_jax.evaluate.job import TABLES_FILE, run
from t4a_jax.logs import start_command


def main(argv: Sequence[str]) -> None:
    workdir = start_command(argv, flags.FLAGS.workdir, "evaluate.log")
    try:
        run(flags.FLAGS.config, workdir)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    with open(os.path.join(workdir, TABLES_FILE), encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {os.path.join(workdir, 'metrics.json')} and {TABLES_FILE}")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", config_path("evaluate"),
                                    "ml_collections config file (configs/evaluate.py)")
    flags.DEFINE_string("workdir", None, "Output folder of the evaluation.")
    app.run(main)
