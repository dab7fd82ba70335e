"""Reading checkpoint files into {key: numpy array}, with errors that name the file.

- `.safetensors`: read with `safetensors.numpy` (no torch); bfloat16 files, which numpy
  cannot represent, are parsed directly and widened to float32.
- `.bin`, `.ckpt`, `.pt`, `.pth`: `torch.load(weights_only=True, map_location="cpu")`, so
  a checkpoint with pickled code is refused; a top-level `state_dict` entry is unwrapped;
  bfloat16 is widened to float32.
- Sharded transformers/diffusers folders via their `*.safetensors.index.json`.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Iterable, Mapping

import numpy as np

TORCH_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One weights file as {key: numpy array} (see the module docstring for formats)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} not found")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    if path.endswith(".index.json"):
        shards = sorted(set(read_json(path)["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            state.update(load_weights(os.path.join(os.path.dirname(path), shard)))
        return state
    if path.endswith(TORCH_SUFFIXES):
        return load_torch_checkpoint(path)
    raise ValueError(f"{path}: unknown weights format (expected .safetensors, "
                     f"a .safetensors.index.json or one of {', '.join(TORCH_SUFFIXES)})")


def load_torch_checkpoint(path: str) -> dict[str, Any]:
    """A torch checkpoint as nested dicts of numpy arrays (top-level `state_dict` unwrapped).

    Nested dicts are kept (IP-Adapter stores `{image_proj: {...}, ip_adapter: {...}}`).
    """
    import torch  # only pickled checkpoints need torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types
        raise ValueError(f"{path}: cannot read the torch checkpoint with weights_only=True "
                         f"({type(e).__name__}: {e})") from e
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return _to_numpy(state, path, prefix="")


def find_file(folder: str | os.PathLike, names: Iterable[str], what: str) -> str:
    """The first of `names` that exists in `folder`; else an error listing them all."""
    folder = os.fspath(folder)
    names = list(names)
    for name in names:
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{folder}: no {what} (looked for {', '.join(names)})")


def _to_numpy(state: Mapping, path: str, prefix: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out[key] = _to_numpy(value, path, f"{prefix}{key}.")
        elif isinstance(value, torch.Tensor):
            value = value.detach()
            out[key] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        else:
            raise ValueError(f"{path}: {prefix}{key} is a {type(value).__name__}, "
                             f"not a tensor")
    return out


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except TypeError:  # numpy has no bfloat16: parse the (simple) format directly
        return _load_safetensors_raw(path)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: cannot read safetensors ({e})") from e


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
                       "U8": np.uint8, "BOOL": np.bool_}


def _load_safetensors_raw(path: str) -> dict[str, np.ndarray]:
    import ml_dtypes

    dtypes = dict(_SAFETENSORS_DTYPES, BF16=ml_dtypes.bfloat16)
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
        data = f.read()
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            raise ValueError(f"{path}: {key} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]])
        array = array.reshape(info["shape"])
        out[key] = array.astype(np.float32) if info["dtype"] == "BF16" else array
    return out


def read_diffusers_config(folder: str | os.PathLike, *, component: str) -> dict[str, Any]:
    """`config.json` of a diffusers model folder; a pipeline root given by mistake gets a
    hint to pass its `component` subfolder."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{component} folder {folder} does not exist")
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        nested = os.path.join(folder, component)
        hint = (f" (it looks like a pipeline folder: pass {nested})"
                if os.path.isfile(os.path.join(nested, "config.json")) else "")
        raise FileNotFoundError(f"{config_path} not found{hint}")
    return read_json(config_path)


def load_diffusers_weights(folder: str | os.PathLike, *, component: str,
                           variant: str | None = None) -> dict[str, Any]:
    """Weights of a diffusers model folder: `diffusion_pytorch_model[.variant]` as
    `.safetensors`, else `.bin`."""
    stem = "diffusion_pytorch_model" + (f".{variant}" if variant else "")
    return load_weights(find_file(folder, [stem + ".safetensors", stem + ".bin"],
                                  f"{component} weights"))
