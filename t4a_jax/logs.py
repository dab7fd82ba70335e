"""Where a command's logs go: library chatter (absl, Orbax, JAX: INFO and up) to a log
file, the console keeping warnings and errors beside the progress bars.

    workdir = start_command(argv, flags.FLAGS.workdir, "animate.log")   # a command's main
"""

from __future__ import annotations

import logging as std_logging
import os
from typing import Sequence

from absl import app, logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"


def log_to_file(path: str) -> std_logging.Handler:
    """Send INFO and up to `path` (appended) and only WARNING and up to the console;
    returns the file handler (remove it from the root logger to stop)."""
    handler = std_logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(std_logging.INFO)
    handler.setFormatter(std_logging.Formatter(FORMAT))
    root = std_logging.getLogger()
    root.addHandler(handler)
    root.setLevel(std_logging.INFO)
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().setLevel(std_logging.WARNING)
    return handler


def start_command(argv: Sequence[str], workdir: str | None, log_name: str) -> str:
    """The start of a command's main: no positional arguments, a required --workdir
    (created), library logs to WORKDIR/`log_name`; returns the absolute workdir."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not workdir:
        raise app.UsageError("--workdir is required")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    log_to_file(os.path.join(workdir, log_name))
    return workdir
