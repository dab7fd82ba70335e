"""`python -m t4a_jax.animate`: a static 3D model and a prompt in, an animated 3D asset
out, with a 4D viewer.

    python -m t4a_jax.animate --config=configs/animate.py --config.asset=model.glb \
        --config.prompt="a dog is running" --config.models=ckpt/mvvdm_pipeline \
        --workdir=out/dog
    python -m t4a_jax.animate --config=configs/animate.py:tiny --workdir=out/animate_tiny

The console shows one progress bar over the stages with each stage's own bars under
it, and warnings; everything the libraries log goes to WORKDIR/animate.log. A rerun
skips what is done (`--config.redo=sample,export` forces stages). Bad input prints
`error: ...` and exits with status 1 before anything is written.
"""

from __future__ import annotations

import os
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

from t4a_jax.animate.job import StageInterrupted, run
from t4a_jax.config_files import config_path
from t4a_jax.logs import start_command


def main(argv: Sequence[str]) -> None:
    workdir = start_command(argv, flags.FLAGS.workdir, "animate.log")
    try:
        out = run(flags.FLAGS.config, workdir)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    except StageInterrupted as e:
        raise SystemExit(f"stopped: {e}") from None
    print(f"done: {out['export']} (open {os.path.join(out['export'], 'viewer.html')})")


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", config_path("animate"),
                                    "ml_collections config file (configs/animate.py)")
    flags.DEFINE_string("workdir", None, "Output folder of the job.")
    app.run(main)
