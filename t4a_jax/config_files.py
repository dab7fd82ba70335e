"""The project's ml_collections config files: `configs/<name>.py` beside the package
(a folder of files, not a package), each with `get_config(variant)`.

    get_config("unet", "tiny_mvvdm")          # configs/unet.py:tiny_mvvdm
    get_config("path/to/my_config.py")        # any file with get_config
    set_key(config, "loss.position_weight", 0.0)   # an existing key, by its dotted path
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

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


def set_key(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    """Set the existing entry at the dotted path `key` ('loss.position_weight');
    ValueError naming `key` when it does not exist (no new keys by typo) or `value` has
    another type than the entry's."""
    node, *path, leaf = [config, *key.split(".")]
    for part in path:
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ValueError(f"no config key {key!r}")
        node = node[part]
    if leaf not in node:
        raise ValueError(f"no config key {key!r}")
    try:
        node[leaf] = value
    except TypeError as e:               # ConfigDict keeps each field's type
        raise ValueError(f"config key {key!r}: {e}") from None
