"""Checks of a Stage One training config (`configs/stage1.py`) before anything compiles.

`validate(config, device_count, process_count)` raises ValueError naming the key for an
unknown key, a missing one, a value of the wrong type, a mesh that the devices cannot
form, a global batch that cannot be split over the 'data' axis, the micro-batches and
the processes, or a missing `init_from` where the variant needs one. The typed configs
it builds (`UNetConfig`, `StageOneLossConfig`, `MVVideoConfig`, the schedule) check
their own fields as well.
"""

from __future__ import annotations

from typing import Any

import ml_collections

_NUM = (int, float)
_STR_OR_NONE = (str, type(None))
_INT_OR_NONE = (int, type(None))

# key -> allowed types; sub-configs checked by their own dataclasses are marked dict.
SCHEMA: dict[str, Any] = {
    "variant": str, "seed": int, "init_from": _STR_OR_NONE,
    "random_init.unet": dict, "random_init.encoders": str,
    "compute_dtype": str, "remat": bool, "trainable": str,
    "data.root": _STR_OR_NONE, "data.heldout_root": _STR_OR_NONE, "data.size": int,
    "data.num_views": int, "data.num_frames": int, "data.frame_stride": int,
    "data.max_start": int, "data.tracks_dir": _STR_OR_NONE,
    "data.exact_tracks_fallback": bool, "data.missing_tracks": str,
    "data.num_workers": int, "data.read_threads": int, "data.prefetch_batches": int,
    "synthetic.enabled": bool, "synthetic.num_objects": int,
    "synthetic.heldout_objects": int, "synthetic.frames": int,
    "synthetic.num_gaussians": int,
    "global_batch_size": int, "grad_accum_steps": int, "total_steps": int,
    "stop_after": _INT_OR_NONE,
    "optimizer.lr": _NUM, "optimizer.warmup_steps": int, "optimizer.weight_decay": _NUM,
    "optimizer.b1": _NUM, "optimizer.b2": _NUM, "optimizer.eps": _NUM,
    "optimizer.grad_clip_norm": _NUM, "skip_nonfinite": bool,
    "loss.diffusion_weight": _NUM, "loss.correspondence_weight": _NUM,
    "loss.position_weight": _NUM, "loss.feature_tap": str, "loss.points_per_view": int,
    "loss.condition_noise": dict, "schedule": dict,
    "mesh.data": int, "mesh.fsdp": int, "distributed": bool,
    "checkpoint.every_steps": int, "checkpoint.max_to_keep": int,
    "checkpoint.async_save": bool, "log_every": int,
    "sample.every_steps": int, "sample.num_objects": int, "sample.num_steps": int,
    "sample.guidance_scale": _NUM, "sample.eta": _NUM, "sample.fps": _NUM,
    "export_models": bool,
    "vae_fit.steps": int, "vae_fit.batch_size": int, "vae_fit.lr": _NUM,
    "vae_fit.kl_weight": _NUM,
}
_POSITIVE = ("seed", "data.size", "data.num_views", "data.num_frames", "global_batch_size",
             "grad_accum_steps", "total_steps", "checkpoint.every_steps",
             "checkpoint.max_to_keep", "log_every", "sample.num_objects",
             "sample.num_steps", "synthetic.num_objects", "synthetic.heldout_objects")


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    items = config.items() if isinstance(config, (dict, ml_collections.ConfigDict)) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if SCHEMA.get(name) is dict:
            out[name] = value
        elif isinstance(value, (dict, ml_collections.ConfigDict)):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def validate(config: ml_collections.ConfigDict, *, device_count: int,
             process_count: int = 1) -> None:
    """Raise ValueError naming the first problem (see the module docstring)."""
    flat = _flatten(config)
    unknown = sorted(set(flat) - set(SCHEMA))
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown}; known keys are listed in "
                         f"t4a_jax/training/config.py SCHEMA (see configs/stage1.py)")
    missing = sorted(set(SCHEMA) - set(flat))
    if missing:
        raise ValueError(f"config: missing key(s) {missing}")
    for name, allowed in SCHEMA.items():
        value = flat[name]
        if allowed is dict:
            if not isinstance(value, (dict, ml_collections.ConfigDict)):
                raise ValueError(f"config.{name} must be a config dict, got {value!r}")
            continue
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = "/".join(t.__name__ for t in allowed)
            raise ValueError(f"config.{name}={value!r} has type {type(value).__name__}; "
                             f"expected {names}")
    for name in _POSITIVE:
        if flat[name] <= 0 and not (name == "seed" and flat[name] == 0):
            raise ValueError(f"config.{name} must be > 0, got {flat[name]}")
    if flat["variant"] not in ("paper", "tiny"):
        raise ValueError(f"config.variant={flat['variant']!r}: expected 'paper' or 'tiny'")
    if flat["random_init.encoders"] not in ("full", "tiny"):
        raise ValueError(f"config.random_init.encoders={flat['random_init.encoders']!r}: "
                         f"expected 'full' or 'tiny'")
    if flat["compute_dtype"] not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"config.compute_dtype={flat['compute_dtype']!r}: expected "
                         f"float32, bfloat16 or float16")
    if flat["vae_fit.steps"] < 0:
        raise ValueError(f"config.vae_fit.steps={flat['vae_fit.steps']} must be >= 0")
    if flat["vae_fit.steps"] and flat["init_from"] is not None:
        raise ValueError(f"config.vae_fit.steps={flat['vae_fit.steps']}: fitting the VAE is "
                         f"for random weights; config.init_from={flat['init_from']} has a "
                         f"trained one (set vae_fit.steps=0)")
    if flat["init_from"] is None and flat["variant"] != "tiny":
        raise ValueError("config.init_from is required for the paper variant: a folder of "
                         "converted checkpoints (unet/ vae/ text_encoder/ tokenizer/ "
                         "image_encoder/, from `python -m tools.convert_weights`); pass "
                         "--config.init_from=DIR, or use configs/stage1.py:tiny")
    if flat["data.root"] is None and not flat["synthetic.enabled"]:
        raise ValueError("config.data.root is required (an MV-Video folder) unless "
                         "config.synthetic.enabled")
    # The mesh and the batch split: global batch = accum x micro-batch, and every
    # micro-batch splits evenly over the 'data' axis and the processes.
    data, fsdp = flat["mesh.data"], flat["mesh.fsdp"]
    for name, size in (("mesh.data", data), ("mesh.fsdp", fsdp)):
        if size == 0 or size < -1:
            raise ValueError(f"config.{name}={size}: must be positive or -1 (fill)")
    if data == -1 and fsdp == -1:
        raise ValueError("config.mesh: at most one of data, fsdp may be -1")
    known = (data if data != -1 else 1) * (fsdp if fsdp != -1 else 1)
    if device_count % known or (-1 not in (data, fsdp) and known != device_count):
        raise ValueError(f"config.mesh data={data} fsdp={fsdp} does not fit "
                         f"{device_count} devices")
    data_size = device_count // fsdp if data == -1 else data
    batch, accum = flat["global_batch_size"], flat["grad_accum_steps"]
    if batch % accum:
        raise ValueError(f"config.global_batch_size={batch} is not divisible by "
                         f"config.grad_accum_steps={accum}")
    if (batch // accum) % data_size:
        raise ValueError(f"config: the micro-batch of {batch // accum} objects "
                         f"(global_batch_size={batch} / grad_accum_steps={accum}) cannot "
                         f"shard over the mesh's 'data' axis of size {data_size}")
    if batch % process_count:
        raise ValueError(f"config.global_batch_size={batch} is not divisible by the "
                         f"{process_count} processes")
    if flat["optimizer.warmup_steps"] < 0 or flat["optimizer.grad_clip_norm"] <= 0:
        raise ValueError("config.optimizer: warmup_steps must be >= 0 and grad_clip_norm > 0")
    if flat["stop_after"] is not None and flat["stop_after"] <= 0:
        raise ValueError(f"config.stop_after must be > 0, got {flat['stop_after']}")
