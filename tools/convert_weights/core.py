"""The one generic loop of weight conversion: a PyTorch state dict -> an NNX module.

NNX modules in `t4a_jax.models` mirror the attribute names of their PyTorch originals, so
a torch key maps to an NNX parameter path mechanically:

    "down_blocks.0.attentions.1.proj_in.weight"
        -> ("down_blocks", 0, "attentions", 1, "proj_in", "kernel")

after optional regex `renames` (for the few places where the names differ). A torch
`weight` becomes whichever of `kernel`, `scale` or `embedding` the module has there;
layouts are converted by the NNX leaf: a 2-D `kernel` is transposed ([out, in] ->
[in, out]), a 4-D `kernel` goes from OIHW to HWIO, a 3-D `kernel` from OIW to WIO.

Every key must land on exactly one parameter with the right shape and every parameter
must be filled: anything else raises `ConversionError` naming the keys, except parameter
paths matched by an explicit `allow_missing` pattern.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import jax
import numpy as np
from flax import nnx

from t4a_jax.models import abstract_model

M = TypeVar("M", bound=nnx.Module)

Path = tuple


class ConversionError(ValueError):
    """A checkpoint does not fit a module: the message names the offending keys."""


@dataclasses.dataclass
class ConversionReport:
    """What one conversion consumed (torch key -> NNX path) and what it let pass."""

    consumed: dict[str, str]
    allowed_missing: list[str]

    def summary(self, source: str) -> str:
        lines = [f"{source}: {len(self.consumed)} tensors converted"]
        if self.allowed_missing:
            lines.append(f"  left at their initial values (--allow-missing): "
                         f"{len(self.allowed_missing)}: {_preview(self.allowed_missing)}")
        return "\n".join(lines)


def empty_model(build: Callable[[Any], M]) -> M:
    """`build(rngs)` without random initialisation: every parameter a (lazily allocated)
    numpy zeros buffer for a conversion to fill in place (converting SD1.5 does not first
    draw 1.3e9 random numbers). Conversions refuse missing parameters, so no zero
    survives unless explicitly allowed."""
    graphdef, state = nnx.split(abstract_model(build))
    return nnx.merge(graphdef, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), state))


def path_str(path: Path) -> str:
    return ".".join(str(p) for p in path)


def apply_renames(key: str, renames: Sequence[tuple[str, str]]) -> str:
    """`key` with every (regex, replacement) of `renames` applied in order."""
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


def torch_key_to_path(key: str, renames: Sequence[tuple[str, str]] = ()) -> Path:
    """Apply `renames` (regex, replacement) in order, then split on dots (ints for digits)."""
    key = apply_renames(key, renames)
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def to_nnx_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    """Convert a torch tensor to the layout of the NNX leaf it fills."""
    if leaf == "kernel":
        if array.ndim == 2:
            return array.T
        if array.ndim == 3:
            return array.transpose(2, 1, 0)
        if array.ndim == 4:
            return array.transpose(2, 3, 1, 0)
    return array


def convert_state_dict(state_dict: Mapping[str, np.ndarray], module: nnx.Module, *,
                       renames: Sequence[tuple[str, str]] = (),
                       allow_missing: Iterable[str] = (),
                       source: str = "checkpoint") -> ConversionReport:
    """Load `state_dict` (torch key -> numpy array) into `module`'s parameters in place.

    Raises ConversionError listing unused keys, missing parameters (unless matched by a
    regex in `allow_missing`) and shape mismatches, all at once.
    """
    params = dict(nnx.to_flat_state(nnx.state(module, nnx.Param)))
    targets = {path_str(p): p for p in params}
    new_values: dict[Path, np.ndarray] = {}
    consumed: dict[str, str] = {}
    unused, mismatched = [], []
    for key, value in state_dict.items():
        path = _resolve(torch_key_to_path(key, renames), targets)
        if path is None:
            unused.append(key)
            continue
        value = to_nnx_layout(np.asarray(value), path[-1])
        expected = tuple(params[path][...].shape)
        if value.shape != expected:
            mismatched.append(f"{key} {tuple(value.shape)} -> {path_str(path)} {expected}")
            continue
        if path in new_values:
            raise ConversionError(f"{source}: two keys map to {path_str(path)} "
                                  f"(the second is {key})")
        new_values[path] = value
        consumed[key] = path_str(path)

    allow = [re.compile(p) for p in allow_missing]
    missing, allowed = [], []
    for path in params:
        if path not in new_values:
            name = path_str(path)
            (allowed if any(p.search(name) for p in allow) else missing).append(name)
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_preview(mismatched)}")
    if unused:
        problems.append(f"{len(unused)} unused keys: {_preview(unused)}")
    if missing:
        problems.append(f"{len(missing)} missing parameters: {_preview(missing)}")
    if problems:
        raise ConversionError(f"{source}: " + "; ".join(problems))

    state = nnx.state(module, nnx.Param)
    for path, value in new_values.items():
        leaf = params[path]
        _set_path(state, path, np.asarray(value, dtype=leaf[...].dtype))
    nnx.update(module, state)
    return ConversionReport(consumed, allowed)


def _resolve(path: Path, targets: Mapping[str, Path]) -> Path | None:
    """The NNX parameter a torch path denotes: `weight` may be kernel/scale/embedding."""
    if path[-1] == "weight":
        for leaf in ("kernel", "scale", "embedding"):
            name = path_str(path[:-1] + (leaf,))
            if name in targets:
                return targets[name]
        return None
    return targets.get(path_str(path))


def _set_path(state, path: Path, value: np.ndarray) -> None:
    node = state
    for part in path[:-1]:
        node = node[part]
    node[path[-1]][...] = value


def _preview(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
