"""Conversion jobs for diffusers / transformers folders: one model folder (`--kind unet`,
`vae`, `clip-text`, `clip-vision`: `model_folder_job`) and a diffusers pipeline root
(`--kind pipeline`: `convert_pipeline`), every component of a known class
(`FOLDER_CLASSES`) plus the tokenizer's files.
"""

from __future__ import annotations

import argparse
import os
from typing import Callable, Mapping

from tools.convert_weights.clip import load_hf_folder
from tools.convert_weights.job import (Converted, Result, clip_dtype_note, clip_from_state,
                                       tokenizer_files, unet_from_folder, vae_from_state)
from tools.convert_weights.ldm import motion_adapter_folder
from tools.convert_weights.sources import read_json
from tools.convert_weights.vae import load_diffusers_vae

# diffusers / transformers class name -> kind, for model folders and pipeline components.
FOLDER_CLASSES = {"UNet2DConditionModel": "unet", "UNetMotionModel": "unet",
                  "AutoencoderKL": "vae", "CLIPTextModel": "clip-text",
                  "CLIPVisionModelWithProjection": "clip-vision"}


def convert_folder(kind: str, folder: str, args: argparse.Namespace, component: str,
                   motion_adapter: str | None = None) -> Converted:
    """Convert the diffusers/transformers model folder `folder` of `kind`."""
    if kind == "unet":
        return unet_from_folder(folder, motion_adapter, args, component, folder)
    if kind == "vae":
        config, state = load_diffusers_vae(folder)
        return vae_from_state(config, state, args, component, folder)
    config, state = load_hf_folder(folder)
    return clip_from_state(kind, config, state, component, folder)


def _refuse_clip_dtype(args: argparse.Namespace) -> None:
    if args.dtype != "float32":
        raise ValueError(f"--dtype {args.dtype}: the CLIP towers take their compute dtype at "
                         f"construction, not from their config, so a checkpoint cannot "
                         f"record it (t4a_jax.models.load builds them in float32)")


def model_folder_job(kind: str) -> Callable[[argparse.Namespace], Result]:
    """The job of `--kind <kind>` for one model folder of that kind (`args.source`)."""
    def convert(args: argparse.Namespace) -> Result:
        if kind.startswith("clip"):
            _refuse_clip_dtype(args)
        if args.motion_adapter and kind != "unet":
            raise ValueError(f"--motion-adapter goes with a U-Net, not --kind {kind}")
        with motion_adapter_folder(args) as adapter:
            return Result([convert_folder(kind, args.source, args, "", adapter)])
    return convert


def convert_pipeline(args: argparse.Namespace) -> Result:
    """Every known component of the diffusers pipeline root `args.source`."""
    root = args.source
    index = read_json(os.path.join(root, "model_index.json"))
    classes = {name: spec[1] for name, spec in index.items()
               if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2
               and spec[1] is not None}
    adapters = [name for name, cls in classes.items() if cls == "MotionAdapter"]
    with motion_adapter_folder(args) as adapter:
        if adapter is None and adapters:
            adapter = os.path.join(root, adapters[0])
        return _pipeline(root, classes, adapter, args)


def _pipeline(root: str, classes: Mapping[str, str], motion_adapter: str | None,
              args: argparse.Namespace) -> Result:
    kinds = {name: FOLDER_CLASSES.get(cls) for name, cls in classes.items()}
    if not any(kinds.values()):
        raise ValueError(f"{root}: no component of a known class "
                         f"({', '.join(FOLDER_CLASSES)}) in model_index.json")
    if motion_adapter is not None and "unet" not in kinds.values():
        raise ValueError(f"{root}: a motion adapter ({motion_adapter}) but no U-Net")
    result = Result([])
    skipped = []
    for name, cls in classes.items():
        kind, folder = kinds[name], os.path.join(root, name)
        if kind is not None:
            if kind.startswith("clip") and args.dtype != "float32":
                result.notes.append(clip_dtype_note(name))
            result.models.append(convert_folder(kind, folder, args, name,
                                                motion_adapter if kind == "unet" else None))
        elif cls == "CLIPTokenizer":
            result.files.update(tokenizer_files(folder, name))
        elif cls != "MotionAdapter":
            skipped.append(f"{name} ({cls})")
    if skipped:
        result.notes.append(f"not converted: {', '.join(skipped)}")
    return result
