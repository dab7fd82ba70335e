"""The project's ml_collections config files: `configs/<name>.py` beside the package
(a folder of files, not a package), each with `get_config(variant)`.

    get_config("unet", "tiny_mvvdm")          # configs/unet.py:tiny_mvvdm
    get_config("path/to/my_config.py")        # any file with get_config
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs")


def config_path(name: str) -> str:
    """The file of config `name`: a path to a .py file, or a name in `CONFIGS_DIR`."""
    path = name if name.endswith(".py") else os.path.join(CONFIGS_DIR, f"{name}.py")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} not found (configs/ ships with the "
                                f"repository; install it editable, pip install -e .)")
    return path


def get_config(name: str, variant: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(variant)` of config file `name` (see `config_path`)."""
    path = config_path(name)
    spec = importlib.util.spec_from_file_location(
        f"t4a_configs_{os.path.splitext(os.path.basename(path))[0]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)
