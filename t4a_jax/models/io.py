"""Converted model checkpoints: a directory with `config.json` and Orbax `params/`.

    save(module, "ckpt/unet")      # any NNX module with a dataclass `config` attribute
    unet = load("ckpt/unet")       # the same class, built from the config, params restored

Convention: a model class is constructed as `Class(config, rngs=...)` and keeps that
config as `self.config`, a (frozen) dataclass whose fields are JSON-friendly values,
tuples, nested dataclasses or dtypes. `config.json` records the class and the config
class by import path, so `load` needs no registry.

Writes are atomic: everything goes to a temporary sibling directory that is renamed
onto `path` at the end; an existing checkpoint at `path` is replaced only then.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import typing
from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from t4a_jax.atomic import atomic_directory
from t4a_jax.sharding import FSDP_RULES, Rules, named_shardings

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
FORMAT_VERSION = 1
M = TypeVar("M", bound=nnx.Module)


def save(module: nnx.Module, path: str | os.PathLike) -> None:
    """Write `module`'s config and parameters to the directory `path` (atomically)."""
    config = getattr(module, "config", None)
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"save: {type(module).__name__} has no dataclass `config` attribute")
    meta = {
        "format_version": FORMAT_VERSION,
        "model": _qualname(type(module)),
        "config_class": _qualname(type(config)),
        "config": _to_json(config),
    }
    with atomic_directory(path) as tmp:
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(os.path.join(tmp, PARAMS_DIR),
                              jax.tree.map(np.asarray, _stored_state(module)))
            checkpointer.wait_until_finished()


def load(path: str | os.PathLike, *, mesh: Mesh | None = None,
         rules: Rules = FSDP_RULES) -> nnx.Module:
    """The module stored at `path` by `save` (or by `python -m tools.convert_weights`).

    With `mesh`, every parameter is read straight into its shards on the mesh, placed
    by its `logical_axes` and `rules` (`t4a_jax.sharding`); no device holds a whole copy
    of the model on the way. Without, everything lands on the default device."""
    path = os.path.abspath(os.fspath(path))
    config_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: not a t4a_jax checkpoint (no {CONFIG_FILE})")
    with open(config_path) as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: invalid JSON ({e})") from e
    for key in ("model", "config_class", "config"):
        if key not in meta:
            raise ValueError(f"{config_path}: missing key {key!r}")
    model_class = _import(meta["model"], config_path)
    config_class = _import(meta["config_class"], config_path)
    config = _from_json(config_class, meta["config"], config_path)
    graphdef, state = nnx.split(abstract_model(lambda rngs: model_class(config, rngs=rngs)))
    params_dir = os.path.join(path, PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{path}: no {PARAMS_DIR}/ directory")
    if mesh is None:
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    else:
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              state, named_shardings(state, mesh, rules))
    with ocp.StandardCheckpointer() as checkpointer:
        return nnx.merge(graphdef, checkpointer.restore(params_dir, target))


class _ShapeOnlyRngs:
    """Stands in for `nnx.Rngs` when a model is built only for its shapes: every draw is
    the same key, and nothing is counted. (Flax's `Rngs` updates a counter Variable per
    draw; under tracing each update asks a tracer for `.sharding`, whose error message
    walks the whole trace, so building SD1.5's topology took 20-60 s instead of ~2 s.)"""

    def params(self) -> jax.Array:
        return jax.random.key(0)

    __call__ = params


def abstract_model(build: Callable[[Any], M]) -> M:
    """`build(rngs)` traced for shapes only (`nnx.eval_shape`): the module with every
    parameter a `jax.ShapeDtypeStruct`, its metadata (`logical_axes`) in place, no weights
    computed. `build` must use `rngs` only to initialise parameters."""
    return nnx.eval_shape(lambda: build(_ShapeOnlyRngs()))


def _stored_state(module: nnx.Module) -> nnx.State:
    """Everything a module holds (parameters and buffers); models keep no RNG state."""
    if nnx.to_flat_state(nnx.state(module, nnx.RngState)):
        raise TypeError(f"save: {type(module).__name__} keeps RNG state; t4a_jax models "
                        f"take rngs only at construction")
    return nnx.state(module)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import(name: str, source: str) -> Any:
    module_name, _, attr = name.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"{source}: cannot import {name!r} ({e})") from e
    return obj


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (type, np.dtype)) or value is jnp.float32 or hasattr(value, "dtype"):
        return {"dtype": jnp.dtype(value).name}
    return value


def _from_json(cls: type, data: dict, source: str) -> Any:
    """Rebuild dataclass `cls` from `_to_json` output, using the field type hints."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{source}: unknown config fields for {cls.__name__}: {unknown}")
    kwargs = {name: _field_from_json(hints.get(name), value) for name, value in data.items()}
    return cls(**kwargs)


def _field_from_json(hint: Any, value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"dtype"}:
        return jnp.dtype(value["dtype"]).type
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _from_json(hint, value, hint.__name__)
    if isinstance(value, list):
        args = typing.get_args(hint)
        inner = args[0] if args else None
        return tuple(_field_from_json(inner, v) for v in value)
    return value
