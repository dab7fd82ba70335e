"""Where a command's logs go: library chatter (absl, Orbax, JAX: INFO and up) to a log
file, the console keeping warnings and errors beside the progress bars.

    log_to_file(os.path.join(workdir, "animate.log"))
"""

from __future__ import annotations

import logging as std_logging

from absl import logging

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
