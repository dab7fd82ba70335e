"""The `--kind mvvdm` job: the MV-VDM U-Net of Animate3D in one command, from its three
checkpoints (the MVDream SD1.5 4-view U-Net, Animate3D's motion modules, the SD1.5
IP-Adapter; combined by `animate3d.convert_animate3d`), and the flags it adds
(`--motion-modules`, `--ip-adapter`, `--mvvdm-variant`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from t4a_jax.config_files import get_config
from t4a_jax.models.unet_config import UNetConfig
from tools.convert_weights.animate3d import convert_animate3d
from tools.convert_weights.job import DTYPES, Converted, Result
from tools.convert_weights.sources import load_diffusers_weights, load_weights


def convert_mvvdm(args: argparse.Namespace) -> Result:
    """The MV-VDM U-Net in one command: the MVDream SD1.5 4-view U-Net (a diffusers U-Net
    folder, or a pipeline root holding `unet/`) + Animate3D's motion-module checkpoint +
    the IP-Adapter, into the `configs/unet.py:mvvdm` architecture (`--mvvdm-variant`)."""
    if not args.motion_modules:
        raise ValueError("--kind mvvdm needs --motion-modules animate3d_motion_modules.ckpt")
    folder = args.source
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        folder = os.path.join(folder, "unet")
    base = load_diffusers_weights(folder, component="unet")
    config = UNetConfig.from_config_dict(get_config("unet", args.mvvdm_variant))
    config = dataclasses.replace(config, dtype=DTYPES[args.dtype])
    ip_adapter = load_weights(args.ip_adapter) if args.ip_adapter else None
    source = f"{folder} + {args.motion_modules}" + (f" + {args.ip_adapter}"
                                                     if args.ip_adapter else "")
    model, report = convert_animate3d(base, load_weights(args.motion_modules), ip_adapter,
                                      config, allow_missing=args.allow_missing,
                                      source=source)
    return Result([Converted("", model, report, source)])


def add_mvvdm_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `--kind mvvdm`."""
    parser.add_argument("--motion-modules", metavar="CKPT",
                        help="mvvdm: Animate3D's animate3d_motion_modules.ckpt")
    parser.add_argument("--ip-adapter", metavar="BIN",
                        help="mvvdm: IP-Adapter ip-adapter_sd15.bin (or .safetensors)")
    parser.add_argument("--mvvdm-variant", default="mvvdm",
                        help="mvvdm: the configs/unet.py variant to build (default mvvdm)")
