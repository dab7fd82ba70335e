"""Logical axis names on parameters, and their placement on a device mesh.

Every parameter of the t4a_jax models carries the metadata `logical_axes`, one name (or
None) per dimension, set by `annotate` when the model is built:

    Linear kernel [in, out]           ("in_channels", "out_channels")
    Conv kernel   [kh, kw, in, out]   (None, None, "in_channels", "out_channels")
    Linear / Conv bias [out]          ("out_channels",)
    Embed table [vocab, dim]          ("vocab", "out_channels")
    GroupNorm / LayerNorm scale, bias ("norm",)
    anything else (CLIP's class embedding, the motion mix factor)   (None, ...)

`rules` map logical names to mesh axes, Flax-style: a sequence of (logical name, mesh
axis or tuple of mesh axes or None). The default `FSDP_RULES` shard each weight over the
`fsdp` axis along its output channels, or its input channels where the output channels
do not divide by the axis size (MVDream's 16 -> 1280 camera layer), or not at all (a
3-channel output conv). Rules are tried in order; a dimension is sharded only when its
size divides by the mesh axes' size and none of those axes already shards another
dimension of the same parameter, so every placement is valid on every mesh.

Optimizer states built by `nnx.Optimizer` inherit the parameters' metadata, so
`named_shardings(nnx.state(optimizer), mesh)` places them like the parameters.

    mesh = make_mesh(data=-1, fsdp=8)
    shardings = named_shardings(nnx.state(unet), mesh)
    nnx.update(unet, jax.device_put(nnx.state(unet), shardings))
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LOGICAL_AXES = "logical_axes"
MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

DATA_AXIS, FSDP_AXIS = "data", "fsdp"
FSDP_RULES: Rules = (("out_channels", FSDP_AXIS), ("in_channels", FSDP_AXIS),
                     ("vocab", FSDP_AXIS))
REPLICATED_RULES: Rules = ()

_LAYER_AXES: dict[type, dict[str, tuple[str | None, ...]]] = {
    nnx.Linear: {"kernel": ("in_channels", "out_channels"), "bias": ("out_channels",)},
    nnx.Conv: {"kernel": (None, None, "in_channels", "out_channels"),
               "bias": ("out_channels",)},
    nnx.Embed: {"embedding": ("vocab", "out_channels")},
    nnx.GroupNorm: {"scale": ("norm",), "bias": ("norm",)},
    nnx.LayerNorm: {"scale": ("norm",), "bias": ("norm",)},
}


def annotate(module: nnx.Module) -> nnx.Module:
    """Set `logical_axes` on every `nnx.Param` of `module` (see the module docstring),
    in place; returns `module`. Parameters already annotated keep their names."""
    for _, node in nnx.iter_graph(module):
        layer_axes = next((_LAYER_AXES[cls] for cls in type(node).__mro__
                           if cls in _LAYER_AXES), None)           # subclasses too
        if layer_axes is None:
            continue
        for attr, axes in layer_axes.items():
            param = getattr(node, attr, None)
            if isinstance(param, nnx.Param) and not param.has_metadata(LOGICAL_AXES):
                if len(axes) != param.ndim:
                    raise ValueError(f"{type(node).__name__}.{attr} has shape {param.shape}; "
                                     f"expected {len(axes)} dimensions")
                param.set_metadata(LOGICAL_AXES, axes)
    for _, node in nnx.iter_graph(module):
        if isinstance(node, nnx.Param) and not node.has_metadata(LOGICAL_AXES):
            node.set_metadata(LOGICAL_AXES, (None,) * node.ndim)
    return module


def partition_spec(axes: Sequence[str | None], shape: Sequence[int],
                   mesh_shape: Mapping[str, int], rules: Rules = FSDP_RULES,
                   ) -> PartitionSpec:
    """The PartitionSpec of one array with logical `axes` and `shape` on a mesh of
    `mesh_shape` ({axis name: size}): rules in order, each applied to the first
    dimension of that logical name whose size divides by the mesh axes' size and whose
    mesh axes are still unused by this array; rules naming axes the mesh lacks fail."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {tuple(axes)} do not match shape {tuple(shape)}")
    spec: list[MeshAxes] = [None] * len(shape)
    used: set[str] = set()
    for logical, mesh_axes in rules:
        names = _axis_names(mesh_axes)
        if not names:
            continue
        missing = [n for n in names if n not in mesh_shape]
        if missing:
            raise ValueError(f"sharding rule ({logical!r}, {mesh_axes!r}) names mesh axes "
                             f"{missing} that the mesh {dict(mesh_shape)} does not have")
        size = math.prod(mesh_shape[n] for n in names)
        if used.intersection(names):
            continue
        for dim, name in enumerate(axes):
            if name == logical and spec[dim] is None and shape[dim] % size == 0:
                spec[dim] = mesh_axes
                used.update(names)
                break
    return PartitionSpec(*spec)


def partition_specs(tree: Any, mesh: Mesh, rules: Rules = FSDP_RULES) -> Any:
    """A PartitionSpec for every leaf of `tree` (a module, an `nnx.State` or a pytree of
    `nnx.Variable`s / arrays): from `logical_axes` where a Variable has them, replicated
    for other Variables (step counters, RNG keys) and plain arrays. An `nnx.Param`
    without annotations is an error naming its path (call `annotate` on the module)."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree)
    mesh_shape = dict(mesh.shape)

    def spec(path, leaf):
        if isinstance(leaf, nnx.Variable):
            shape = np.shape(leaf.get_value())
            if leaf.has_metadata(LOGICAL_AXES):
                return leaf.replace(partition_spec(leaf.get_metadata(LOGICAL_AXES), shape,
                                                   mesh_shape, rules))
            if isinstance(leaf, nnx.Param):
                raise ValueError(f"parameter {_dotted(path)} {shape} has no "
                                 f"{LOGICAL_AXES!r} metadata; call t4a_jax.sharding.annotate "
                                 f"on its module")
            return leaf.replace(PartitionSpec())
        return PartitionSpec()

    return jax.tree_util.tree_map_with_path(
        spec, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def named_shardings(tree: Any, mesh: Mesh, rules: Rules = FSDP_RULES) -> Any:
    """`partition_specs` as `NamedSharding`s on `mesh`."""
    specs = partition_specs(tree, mesh, rules)
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs,
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


def shard_module(module: nnx.Module, mesh: Mesh, rules: Rules = FSDP_RULES) -> nnx.Module:
    """Move `module`'s state onto `mesh` as the rules say, in place; returns `module`."""
    state = nnx.state(module)
    nnx.update(module, jax.device_put(state, named_shardings(state, mesh, rules)))
    return module


def make_mesh(data: int = -1, fsdp: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp') mesh over `devices` (default: all, in the topology-aware order of
    `jax.make_mesh`), with Auto axes (GSPMD propagates shardings through jit); one size
    may be -1, meaning all the devices the other leaves. Sizes that do not multiply to
    the device count are an error naming both."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = {DATA_AXIS: data, FSDP_AXIS: fsdp}
    unknown = [name for name, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1")
    if any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"mesh sizes {sizes}: sizes must be positive or -1")
    known = math.prod(size for size in sizes.values() if size != -1)
    if unknown:
        if len(devices) % known:
            raise ValueError(f"mesh sizes {sizes}: {len(devices)} devices do not divide "
                             f"by {known}")
        sizes[unknown[0]] = len(devices) // known
    if math.prod(sizes.values()) != len(devices):
        raise ValueError(f"mesh sizes {sizes} need {math.prod(sizes.values())} devices; "
                         f"there are {len(devices)}")
    return jax.make_mesh((sizes[DATA_AXIS], sizes[FSDP_AXIS]), (DATA_AXIS, FSDP_AXIS),
                         axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def _dotted(path: tuple) -> str:
    """A pytree key path as dotted module names: ('up_blocks', 1, 'conv', 'kernel')."""
    parts = (getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
    return ".".join(str(p) for p in parts)


def _axis_names(mesh_axes: MeshAxes) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    if isinstance(mesh_axes, str):
        return (mesh_axes,)
    if isinstance(mesh_axes, Iterable):
        return tuple(mesh_axes)
    raise TypeError(f"mesh axes must be a name, a tuple of names or None, got {mesh_axes!r}")
