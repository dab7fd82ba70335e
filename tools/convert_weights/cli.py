"""`python -m tools.convert_weights SRC OUT`: PyTorch checkpoints -> t4a_jax checkpoints.

    python -m tools.convert_weights sd15/unet ckpt/unet --motion-adapter mm_sd_v15_v2.ckpt
    python -m tools.convert_weights sd15 ckpt/sd15                  # a whole pipeline
    python -m tools.convert_weights v1-5-pruned.safetensors ckpt/sd15 --config sd15

OUT is written with `t4a_jax.models.save` (config.json + Orbax params; read it back with
`t4a_jax.models.load`); a pipeline gets one such checkpoint per component,
`OUT/<component>`, and its tokenizer files in `OUT/tokenizer`. Everything is converted in
memory first and OUT appears at the end by one rename, so a failed run leaves nothing
there. An existing non-empty OUT is replaced only with `--overwrite`.

Kinds (`--kind`, default `auto`: detected from SRC):
  unet         diffusers `UNet2DConditionModel` or `UNetMotionModel` folder (config.json
               `_class_name`); `--motion-adapter` adds AnimateDiff motion modules.
  vae          diffusers `AutoencoderKL` folder.
  clip-text    transformers `CLIPTextModel` folder (config.json `architectures`).
  clip-vision  transformers `CLIPVisionModelWithProjection` folder.
  pipeline     diffusers pipeline root (model_index.json): every component of a known class
               (the four above; a `MotionAdapter` component joins the U-Net) and the
               tokenizer; other components (scheduler, safety checker, ...) are listed as
               not converted.
  ldm-ckpt     an original single-file Stable Diffusion checkpoint (.ckpt/.safetensors,
               `model.diffusion_model.*` keys), split and renamed by diffusers' own
               `single_file_utils` converters, then converted as a pipeline. `--config` names
               a diffusers pipeline folder of the same architecture (for example
               stable-diffusion-v1-5) whose config.json files and tokenizer are used; its
               weights are not read.
  dino         a DINO ViT backbone file (`dino_vitbase16_pretrain.pth`, or timm's
               `vit_base_patch16_224.dino` weights) or a transformers ViTModel folder
               (facebook/dino-vitb16): VBench's I2V feature network (`dino.py`); pass
               `--kind dino`.
  clip         a transformers `CLIPModel` folder (config.json `architectures`; both
               towers): OUT/vision, OUT/text (with their projections), OUT/tokenizer.
  aesthetic-head  LAION's `sa_0_4_vit_l_14_linear.pth`; pass `--kind aesthetic-head`
               (`evaluation.py`).
`--motion-adapter` is a diffusers `MotionAdapter` folder or an original AnimateDiff
motion-module checkpoint (mm_sd_v15_v2.ckpt), renamed by diffusers'
`convert_animatediff_checkpoint_to_diffusers`.

Every run prints, per model, the report summary (tensors converted and the source, and
parameters let pass by `--allow-missing`), the destination and the parameter count.
Unused, missing or mis-shaped keys fail the run with exit status 1 and the
`ConversionError` that names them. `--allow-missing` reaches the U-Net converter only
(kinds unet, pipeline, ldm-ckpt); the VAE and CLIP converters have no such parameter.

Extension point: `KINDS` maps a kind name to a `Kind` (its converter function, help, and
the flags it adds). A converter takes the parsed arguments and returns a `job.Result`
(models to save, files to copy, notes) without writing anything; `main` prints and
writes. The converters live by job: model folders and pipelines in `pipeline.py`,
single-file checkpoints (LDM, original AnimateDiff) in `ldm.py`, and the combined
MVDream + Animate3D + IP-Adapter U-Net in `mvvdm.py`, registered here as
`KINDS["mvvdm"]` with its `--motion-modules CKPT --ip-adapter BIN` flags:

    python -m tools.convert_weights mvdream-sd15 ckpt/mvvdm --kind mvvdm \
        --motion-modules animate3d_motion_modules.ckpt --ip-adapter ip-adapter_sd15.bin
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from typing import Callable, Sequence

import numpy as np
from flax import nnx

from t4a_jax.atomic import atomic_directory
from t4a_jax.models import save
from tools.convert_weights.dino import convert_dino_source
from tools.convert_weights.evaluation import convert_aesthetic_head, convert_clip_model_folder
from tools.convert_weights.job import DTYPES, Result
from tools.convert_weights.ldm import convert_ldm_checkpoint
from tools.convert_weights.mvvdm import add_mvvdm_arguments, convert_mvvdm
from tools.convert_weights.pipeline import FOLDER_CLASSES, convert_pipeline, model_folder_job
from tools.convert_weights.sources import TORCH_SUFFIXES, read_json


@dataclasses.dataclass(frozen=True)
class Kind:
    """A conversion the CLI offers. `convert(args)` reads `args.source` (and the flags) and
    returns a `Result`; `allow_missing` says whether it honours `--allow-missing`;
    `add_arguments` adds the kind's own flags to the parser."""

    convert: Callable[[argparse.Namespace], Result]
    help: str
    allow_missing: bool = False
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def detect_kind(source: str) -> str:
    """The kind of SRC: by model_index.json (pipeline), config.json `_class_name`
    (diffusers) or `architectures` (transformers), or a checkpoint file suffix."""
    if os.path.isfile(source):
        if source.endswith(TORCH_SUFFIXES + (".safetensors",)):
            return "ldm-ckpt"
        raise ValueError(f"{source}: not a checkpoint file (expected .safetensors or one of "
                         f"{', '.join(TORCH_SUFFIXES)}) or a model folder")
    if not os.path.isdir(source):
        raise FileNotFoundError(f"{source}: no such file or folder")
    if os.path.isfile(os.path.join(source, "model_index.json")):
        return "pipeline"
    config_path = os.path.join(source, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{source}: neither model_index.json (a pipeline) nor "
                                f"config.json (a model folder)")
    config = read_json(config_path)
    names = [config.get("_class_name")] + list(config.get("architectures") or [])
    if "CLIPModel" in names:
        return "clip"
    if "MotionAdapter" in names:
        raise ValueError(f"{source} holds a MotionAdapter (motion modules only): pass it as "
                         f"--motion-adapter with a U-Net folder or pipeline as SRC")
    for name in names:
        if name in FOLDER_CLASSES:
            return FOLDER_CLASSES[name]
    raise ValueError(f"{config_path}: unknown model class {[n for n in names if n]} "
                     f"(known: {', '.join(FOLDER_CLASSES)}); pass --kind")


KINDS: dict[str, Kind] = {
    **{kind: Kind(model_folder_job(kind), f"a {kind} model folder", allow_missing=kind == "unet")
       for kind in ("unet", "vae", "clip-text", "clip-vision")},
    "pipeline": Kind(convert_pipeline, "a diffusers pipeline root (model_index.json)",
                     allow_missing=True),
    "ldm-ckpt": Kind(convert_ldm_checkpoint,
                     "an original single-file Stable Diffusion checkpoint (needs --config)",
                     allow_missing=True),
    "mvvdm": Kind(convert_mvvdm, "MVDream U-Net folder + --motion-modules (Animate3D) + "
                  "--ip-adapter -> one MV-VDM U-Net", allow_missing=True,
                  add_arguments=add_mvvdm_arguments),
    "dino": Kind(convert_dino_source, "a DINO ViT checkpoint file (dino_vitbase16_pretrain.pth "
                 "or timm's vit_base_patch16_224.dino) or a transformers ViTModel folder "
                 "(facebook/dino-vitb16), for the evaluation"),
    "clip": Kind(convert_clip_model_folder, "a transformers CLIPModel folder (both towers, "
                 "e.g. openai/clip-vit-large-patch14) -> OUT/vision, OUT/text, OUT/tokenizer"),
    "aesthetic-head": Kind(convert_aesthetic_head, "LAION's sa_0_4_vit_l_14_linear.pth "
                           "(VBench's aesthetic head)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.convert_weights",
        description="Convert PyTorch checkpoints to t4a_jax (Orbax) checkpoints.",
        epilog="kinds: " + "; ".join(f"{name}: {kind.help}" for name, kind in KINDS.items()))
    parser.add_argument("source", metavar="SRC",
                        help="model folder, pipeline root or checkpoint file")
    parser.add_argument("output", metavar="OUT", help="checkpoint directory to write")
    parser.add_argument("--kind", default="auto", choices=["auto", *KINDS],
                        help="what SRC is (default: detected)")
    parser.add_argument("--motion-adapter", metavar="PATH",
                        help="AnimateDiff motion modules for the U-Net: a diffusers "
                             "MotionAdapter folder or an original checkpoint file")
    parser.add_argument("--config", metavar="DIR",
                        help="ldm-ckpt: a diffusers pipeline folder giving the configs and "
                             "tokenizer")
    parser.add_argument("--allow-missing", metavar="REGEX", action="append", default=[],
                        help="U-Net parameters matching REGEX may be absent from the "
                             "checkpoint: they start at zero (repeatable; the VAE and CLIP "
                             "converters take no allow_missing)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="compute dtype recorded in the U-Net/VAE configs (parameters "
                             "stay float32)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing non-empty OUT")
    for kind in KINDS.values():
        if kind.add_arguments is not None:
            kind.add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (1 with the error on stderr on failure)."""
    args = build_parser().parse_args(argv)
    try:
        kind_name = detect_kind(args.source) if args.kind == "auto" else args.kind
        kind = KINDS[kind_name]
        if args.allow_missing and not kind.allow_missing:
            raise ValueError(f"--allow-missing is not supported by --kind {kind_name} (its "
                             f"converters take no allow_missing)")
        output = os.path.abspath(args.output)
        if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
            raise FileExistsError(f"{output} exists and is not empty (pass --overwrite)")
        if os.path.exists(output) and not os.path.isdir(output):
            raise FileExistsError(f"{output} exists and is not a directory")
        print(f"{args.source}: converting as {kind_name}")
        result = kind.convert(args)
        for converted in result.models:
            destination = os.path.join(output, converted.component)
            print(converted.report.summary(converted.source))
            print(f"  -> {os.path.normpath(destination)}: {type(converted.model).__name__}, "
                  f"{parameter_count(converted.model):,} parameters")
        for note in result.notes:
            print(note)
        write(result, output)
    except (ValueError, OSError) as e:  # ConversionError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


def parameter_count(model: nnx.Module) -> int:
    """The number of scalars in `model`'s parameters."""
    return sum(int(np.size(v[...])) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))


def write(result: Result, output: str) -> None:
    """Save every model and copy every file into a temporary sibling of `output`, then
    rename it onto `output` (replacing what was there)."""
    with atomic_directory(output) as tmp:
        for converted in result.models:
            save(converted.model, os.path.join(tmp, converted.component)
                 if converted.component else tmp)
        for relative, source in result.files.items():
            target = os.path.join(tmp, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(source, target)
