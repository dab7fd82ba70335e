"""Original single-file checkpoints, read through diffusers' own `single_file_utils`
converters: a Stable Diffusion LDM checkpoint (`--kind ldm-ckpt`:
`convert_ldm_checkpoint`) and an AnimateDiff motion-module checkpoint given as
`--motion-adapter` (`motion_adapter_folder`, for every job that takes the flag).

diffusers' converters run on placeholders (`_through_key_converter`), so every tensor
they output is traced back to its source key and none is dropped unseen; their output is
staged as diffusers folders beside OUT (removed on exit) and converted from there like
any other folder (`job.unet_from_folder`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import tempfile
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from tools.convert_weights.core import ConversionError
from tools.convert_weights.job import (Result, clip_dtype_note, clip_from_state,
                                       tokenizer_files, unet_from_folder, vae_from_state)
from tools.convert_weights.sources import load_weights, read_json
from tools.convert_weights.vae import vae_config_from_diffusers

# The parts of an original LDM checkpoint that diffusers' converters turn into models.
LDM_PREFIXES = {"unet": ("model.diffusion_model.",),
                "vae": ("first_stage_model.", "vae."),
                "text_encoder": ("cond_stage_model.transformer.",
                                 "conditioner.embedders.0.transformer.")}
# AnimateDiff's motion modules have 8 heads; its original checkpoints do not record it.
ANIMATEDIFF_HEADS = 8


def convert_ldm_checkpoint(args: argparse.Namespace) -> Result:
    """An original single-file SD checkpoint: diffusers' `convert_ldm_unet_checkpoint`,
    `convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint` (configs from
    `--config`), then the pipeline converters. Keys outside the three models (EMA copies,
    noise-schedule buffers) are listed as not converted; a key inside one of them that
    diffusers' converters do not use is an error."""
    from diffusers.loaders.single_file_utils import (convert_ldm_clip_checkpoint,
                                                     convert_ldm_unet_checkpoint,
                                                     convert_ldm_vae_checkpoint)

    src = args.source
    checkpoint = load_weights(src)
    if not any(k.startswith(LDM_PREFIXES["unet"]) for k in checkpoint):
        if any(".temporal_transformer." in k for k in checkpoint):
            raise ValueError(f"{src} holds AnimateDiff motion modules, not a Stable Diffusion "
                             f"model: pass it as --motion-adapter with a U-Net")
        raise ValueError(f"{src}: no model.diffusion_model.* keys: not an original LDM "
                         f"Stable Diffusion checkpoint")
    if not args.config:
        raise ValueError(f"{src}: --kind ldm-ckpt needs --config DIR, a diffusers pipeline "
                         f"folder of the same architecture (its unet/, vae/, text_encoder/ "
                         f"config.json and tokenizer/ are used)")
    configs = {name: read_json(os.path.join(args.config, name, "config.json"))
               for name in LDM_PREFIXES}
    converters = {
        "unet": lambda sd: convert_ldm_unet_checkpoint(sd, configs["unet"]),
        "vae": lambda sd: convert_ldm_vae_checkpoint(sd, configs["vae"]),
        "text_encoder": convert_ldm_clip_checkpoint,
    }
    states, used = {}, set()
    for name, convert in converters.items():
        states[name], origin = _through_key_converter(checkpoint, convert, src)
        used.update(origin.values())
    prefixes = tuple(p for group in LDM_PREFIXES.values() for p in group)
    dropped = [k for k in checkpoint if k.startswith(prefixes) and k not in used]
    if dropped:
        raise ConversionError(f"{src}: {len(dropped)} keys that diffusers' converters did not "
                              f"use: {_preview(dropped)}")
    label = lambda name: f"{src} [{name}, via diffusers]"
    with motion_adapter_folder(args) as adapter, _staging(args.output) as staging:
        unet_folder = os.path.join(staging, "unet")
        _write_diffusers_folder(unet_folder, configs["unet"], states["unet"])
        result = Result([unet_from_folder(unet_folder, adapter, args, "unet", label("unet"))])
    vae_config = vae_config_from_diffusers(configs["vae"], source=os.path.join(
        args.config, "vae", "config.json"))
    result.models.append(vae_from_state(vae_config, states["vae"], args, "vae", label("vae")))
    result.models.append(clip_from_state("clip-text", configs["text_encoder"],
                                         states["text_encoder"], "text_encoder",
                                         label("text_encoder")))
    if args.dtype != "float32":
        result.notes.append(clip_dtype_note("text_encoder"))
    result.files.update(tokenizer_files(os.path.join(args.config, "tokenizer"), "tokenizer"))
    others = [k for k in checkpoint if not k.startswith(prefixes)]
    if others:
        result.notes.append(f"{src}: not converted (outside the U-Net, VAE and text "
                            f"encoder): {len(others)} keys: {_group(others)}")
    return result


def _through_key_converter(checkpoint: Mapping[str, np.ndarray],
                           convert: Callable[[dict], dict], source: str,
                           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Run one of diffusers' single-file converters, which only select, rename and drop
    size-1 axes (`[:, :, 0, 0]` of 1x1 convolutions), on placeholders: each key's
    placeholder has the tensor's shape and holds its key's index everywhere (zero strides,
    no memory). Every output then names its source key exactly, so the caller can refuse
    keys the converter dropped; an output that is not a whole tensor is refused here.

    Returns ({diffusers key: the source tensor reshaped as the converter sliced it},
    {diffusers key: source key})."""
    keys = list(checkpoint)
    placeholders = {k: np.broadcast_to(np.int64(i), np.shape(checkpoint[k]))
                    for i, k in enumerate(keys)}
    try:
        converted = convert(placeholders)
    except KeyError as e:  # some converters index a key directly (an upsampler's bias)
        raise ConversionError(f"{source}: diffusers' converter needs {e.args[0]} (under its "
                              f"model's prefix), which the checkpoint lacks") from e
    state, origin = {}, {}
    for key, placeholder in converted.items():
        if not isinstance(placeholder, np.ndarray) or placeholder.size == 0:
            raise ConversionError(f"{source}: diffusers' converter produced {key} from no "
                                  f"tensor of the checkpoint")
        src = keys[int(placeholder.flat[0])]
        if placeholder.size != np.size(checkpoint[src]):
            raise ConversionError(f"{source}: diffusers' converter made {key} "
                                  f"{placeholder.shape} from part of {src} "
                                  f"{np.shape(checkpoint[src])}")
        state[key] = np.reshape(checkpoint[src], placeholder.shape)
        origin[key] = src
    return state, origin


@contextlib.contextmanager
def motion_adapter_folder(args: argparse.Namespace) -> Iterator[str | None]:
    """The diffusers MotionAdapter folder for `--motion-adapter` (None without it): the
    folder itself, or a staging folder (removed on exit) made from an original AnimateDiff
    motion-module checkpoint file.

    An original file's keys are renamed by diffusers'
    `convert_animatediff_checkpoint_to_diffusers`, which drops the `pos_encoder.pe`
    position tables; they are first renamed to the `processor.time_pos_embed.pe` form that
    `tools.convert_weights.unet` checks against the sinusoid, so none is left out
    unchecked. The adapter config is read off the tensors (see `_animatediff_config`)."""
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

    path = args.motion_adapter
    if path is None or os.path.isdir(path):
        yield path
        return
    checkpoint = {re.sub(r"\.pos_encoder\.pe$", ".processor.time_pos_embed.pe", k): v
                  for k, v in load_weights(path).items()}
    if not any(".temporal_transformer." in k for k in checkpoint):
        raise ValueError(f"--motion-adapter {path}: no *.temporal_transformer.* keys: not an "
                         f"original AnimateDiff motion-module checkpoint (or pass a diffusers "
                         f"MotionAdapter folder)")
    state, _ = _through_key_converter(checkpoint, convert_animatediff_checkpoint_to_diffusers,
                                      path)
    with _staging(args.output) as staging:
        folder = os.path.join(staging, "motion_adapter")
        _write_diffusers_folder(folder, _animatediff_config(state, path), state)
        yield folder


def _animatediff_config(state: Mapping[str, np.ndarray], source: str) -> dict[str, Any]:
    """The diffusers MotionAdapter config of a (renamed) AnimateDiff state dict: levels,
    channels, modules per block, transformer layers, mid block and frames (the position
    tables' length) from the tensors; heads are AnimateDiff's 8, which the file omits."""
    def indices(pattern: str) -> list[int]:
        found = {int(m[1]) for k in state for m in [re.match(pattern, k)] if m}
        return sorted(found)

    levels = indices(r"down_blocks\.(\d+)\.motion_modules\.")
    if not levels:
        raise ValueError(f"{source}: no down_blocks.*.motion_modules.* keys")
    tables = [v for k, v in state.items() if k.endswith(".time_pos_embed.pe")]
    config = {
        "_class_name": "MotionAdapter",
        "block_out_channels": [int(state[f"down_blocks.{i}.motion_modules.0.proj_in.weight"]
                                   .shape[0]) for i in levels],
        "motion_layers_per_block": len(indices(r"down_blocks\.0\.motion_modules\.(\d+)\.")),
        "motion_transformer_layers_per_block": len(indices(
            r"down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\.")),
        "motion_num_attention_heads": ANIMATEDIFF_HEADS,
        "use_motion_mid_block": any(k.startswith("mid_block.motion_modules.") for k in state),
    }
    if tables:
        config["motion_max_seq_length"] = int(tables[0].shape[1])
    return config


def _write_diffusers_folder(folder: str, config: Mapping[str, Any],
                            state: Mapping[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()},
              os.path.join(folder, "diffusion_pytorch_model.safetensors"))


def _staging(output: str) -> tempfile.TemporaryDirectory:
    """A temporary directory beside OUT (same filesystem, removed on exit)."""
    parent, base = os.path.split(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    return tempfile.TemporaryDirectory(prefix=f".{base}.staging-", dir=parent)


def _preview(items: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def _group(keys: Sequence[str]) -> str:
    """Keys grouped by their first component: 'alphas_cumprod, model_ema.* (688), ...'."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split(".", 1)[0], []).append(key)
    return _preview([members[0] if len(members) == 1 else f"{head}.* ({len(members)})"
                     for head, members in sorted(groups.items())])
