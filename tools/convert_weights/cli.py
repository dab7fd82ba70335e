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
`--motion-adapter` is a diffusers `MotionAdapter` folder or an original AnimateDiff
motion-module checkpoint (mm_sd_v15_v2.ckpt), renamed by diffusers'
`convert_animatediff_checkpoint_to_diffusers`.

Every run prints, per model, the report summary (tensors converted and the source, and
parameters let pass by `--allow-missing`), the destination and the parameter count.
Unused, missing or mis-shaped keys fail the run with exit status 1 and the
`ConversionError` that names them. `--allow-missing` reaches the U-Net converter only
(kinds unet, pipeline, ldm-ckpt); the VAE and CLIP converters have no such parameter.

Extension point: `KINDS` maps a kind name to a `Kind` (its converter function, help, and
the flags it adds). A converter takes the parsed arguments and returns a `Result` (models
to save, files to copy, notes) without writing anything; `main` prints and writes. The
combined MVDream + Animate3D + IP-Adapter U-Net registers here as
`KINDS["mvvdm"]` with its `--motion-modules CKPT --ip-adapter BIN` flags:

    python -m tools.convert_weights mvdream-sd15 ckpt/mvvdm --kind mvvdm \
        --motion-modules animate3d_motion_modules.ckpt --ip-adapter ip-adapter_sd15.bin
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.atomic import atomic_directory
from t4a_jax.config_files import get_config
from t4a_jax.models import save
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from t4a_jax.models.unet import UNetConfig
from tools.convert_weights.animate3d import convert_animate3d
from tools.convert_weights.clip import convert_clip_text, convert_clip_vision, load_hf_folder
from tools.convert_weights.core import ConversionError, ConversionReport, empty_model
from tools.convert_weights.sources import (TORCH_SUFFIXES, load_diffusers_weights,
                                           load_weights, read_json)
from tools.convert_weights.unet import convert_unet_with_report, load_diffusers_unet
from tools.convert_weights.vae import (convert_vae_into, load_diffusers_vae,
                                       vae_config_from_diffusers)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TOKENIZER_FILES = ("vocab.json", "merges.txt")
TOKENIZER_OPTIONAL_FILES = ("special_tokens_map.json", "tokenizer_config.json")
# diffusers / transformers class name -> kind, for model folders and pipeline components.
FOLDER_CLASSES = {"UNet2DConditionModel": "unet", "UNetMotionModel": "unet",
                  "AutoencoderKL": "vae", "CLIPTextModel": "clip-text",
                  "CLIPVisionModelWithProjection": "clip-vision"}
# The parts of an original LDM checkpoint that diffusers' converters turn into models.
LDM_PREFIXES = {"unet": ("model.diffusion_model.",),
                "vae": ("first_stage_model.", "vae."),
                "text_encoder": ("cond_stage_model.transformer.",
                                 "conditioner.embedders.0.transformer.")}
# AnimateDiff's motion modules have 8 heads; its original checkpoints do not record it.
ANIMATEDIFF_HEADS = 8


@dataclasses.dataclass(frozen=True)
class Converted:
    """One converted model, saved to OUT/<component> (OUT itself when component is "")."""

    component: str
    model: nnx.Module
    report: ConversionReport
    source: str


@dataclasses.dataclass
class Result:
    """What a converter produced: models to save, files to copy (path under OUT -> source
    file), and notes on what it saw and deliberately did not convert."""

    models: list[Converted]
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Kind:
    """A conversion the CLI offers. `convert(args)` reads `args.source` (and the flags) and
    returns a `Result`; `allow_missing` says whether it honours `--allow-missing`;
    `add_arguments` adds the kind's own flags to the parser."""

    convert: Callable[[argparse.Namespace], Result]
    help: str
    allow_missing: bool = False
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


# --- one model ----------------------------------------------------------------------------

def _unet(folder: str, motion_adapter: str | None, args: argparse.Namespace,
          component: str, source: str) -> Converted:
    config, state = load_diffusers_unet(folder, motion_adapter=motion_adapter,
                                        dtype=DTYPES[args.dtype])
    model, report = convert_unet_with_report(state, config, allow_missing=args.allow_missing,
                                             source=source)
    return Converted(component, model, report, source)


def _vae(config: VAEConfig, state: Mapping[str, np.ndarray], args: argparse.Namespace,
         component: str, source: str) -> Converted:
    config = dataclasses.replace(config, dtype=DTYPES[args.dtype])
    model = empty_model(lambda rngs: AutoencoderKL(config, rngs=rngs))
    return Converted(component, model, convert_vae_into(state, model, source=source), source)


def _clip(kind: str, config: Mapping[str, Any], state: Mapping[str, np.ndarray],
          component: str, source: str) -> Converted:
    convert = convert_clip_text if kind == "clip-text" else convert_clip_vision
    model, report = convert(state, config, source=source)
    return Converted(component, model, report, source)


def _folder(kind: str, folder: str, args: argparse.Namespace, component: str,
            motion_adapter: str | None = None) -> Converted:
    """Convert the diffusers/transformers model folder `folder` of `kind`."""
    if kind == "unet":
        return _unet(folder, motion_adapter, args, component, folder)
    if kind == "vae":
        config, state = load_diffusers_vae(folder)
        return _vae(config, state, args, component, folder)
    config, state = load_hf_folder(folder)
    return _clip(kind, config, state, component, folder)


def _refuse_clip_dtype(args: argparse.Namespace) -> None:
    if args.dtype != "float32":
        raise ValueError(f"--dtype {args.dtype}: the CLIP towers take their compute dtype at "
                         f"construction, not from their config, so a checkpoint cannot "
                         f"record it (t4a_jax.models.load builds them in float32)")


def _clip_dtype_note(component: str) -> str:
    return (f"{component}: written with float32 compute (--dtype does not apply to the CLIP "
            f"towers)")


def _model_kind(kind: str) -> Kind:
    def convert(args: argparse.Namespace) -> Result:
        if kind.startswith("clip"):
            _refuse_clip_dtype(args)
        if args.motion_adapter and kind != "unet":
            raise ValueError(f"--motion-adapter goes with a U-Net, not --kind {kind}")
        with _motion_adapter_folder(args) as adapter:
            return Result([_folder(kind, args.source, args, "", adapter)])
    return Kind(convert, f"a {kind} model folder", allow_missing=kind == "unet")


# --- pipelines ----------------------------------------------------------------------------

def convert_pipeline(args: argparse.Namespace) -> Result:
    """Every known component of the diffusers pipeline root `args.source`."""
    root = args.source
    index = read_json(os.path.join(root, "model_index.json"))
    classes = {name: spec[1] for name, spec in index.items()
               if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2
               and spec[1] is not None}
    adapters = [name for name, cls in classes.items() if cls == "MotionAdapter"]
    with _motion_adapter_folder(args) as adapter:
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
                result.notes.append(_clip_dtype_note(name))
            result.models.append(_folder(kind, folder, args, name,
                                         motion_adapter if kind == "unet" else None))
        elif cls == "CLIPTokenizer":
            result.files.update(_tokenizer_files(folder, name))
        elif cls != "MotionAdapter":
            skipped.append(f"{name} ({cls})")
    if skipped:
        result.notes.append(f"not converted: {', '.join(skipped)}")
    return result


def _tokenizer_files(folder: str, component: str) -> dict[str, str]:
    """{OUT-relative path: file} of a CLIP tokenizer folder, checked by reading it."""
    CLIPTokenizer.from_folder(folder)  # raises naming the file if vocab/merges are bad
    names = TOKENIZER_FILES + tuple(n for n in TOKENIZER_OPTIONAL_FILES
                                    if os.path.isfile(os.path.join(folder, n)))
    return {f"{component}/{n}": os.path.join(folder, n) for n in names}


# --- single-file checkpoints through diffusers' converters --------------------------------

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
    with _motion_adapter_folder(args) as adapter, _staging(args.output) as staging:
        unet_folder = os.path.join(staging, "unet")
        _write_diffusers_folder(unet_folder, configs["unet"], states["unet"])
        result = Result([_unet(unet_folder, adapter, args, "unet", label("unet"))])
    vae_config = vae_config_from_diffusers(configs["vae"], source=os.path.join(
        args.config, "vae", "config.json"))
    result.models.append(_vae(vae_config, states["vae"], args, "vae", label("vae")))
    result.models.append(_clip("clip-text", configs["text_encoder"], states["text_encoder"],
                               "text_encoder", label("text_encoder")))
    if args.dtype != "float32":
        result.notes.append(_clip_dtype_note("text_encoder"))
    result.files.update(_tokenizer_files(os.path.join(args.config, "tokenizer"), "tokenizer"))
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
def _motion_adapter_folder(args: argparse.Namespace) -> Iterator[str | None]:
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


# --- detection, parser, main --------------------------------------------------------------

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
    if "MotionAdapter" in names:
        raise ValueError(f"{source} holds a MotionAdapter (motion modules only): pass it as "
                         f"--motion-adapter with a U-Net folder or pipeline as SRC")
    for name in names:
        if name in FOLDER_CLASSES:
            return FOLDER_CLASSES[name]
    raise ValueError(f"{config_path}: unknown model class {[n for n in names if n]} "
                     f"(known: {', '.join(FOLDER_CLASSES)}); pass --kind")


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
    config = UNetConfig.from_config_dict(_unet_config(args.mvvdm_variant))
    config = dataclasses.replace(config, dtype=DTYPES[args.dtype])
    ip_adapter = load_weights(args.ip_adapter) if args.ip_adapter else None
    source = f"{folder} + {args.motion_modules}" + (f" + {args.ip_adapter}"
                                                     if args.ip_adapter else "")
    model, report = convert_animate3d(base, load_weights(args.motion_modules), ip_adapter,
                                      config, allow_missing=args.allow_missing,
                                      source=source)
    return Result([Converted("", model, report, source)])


def _unet_config(variant: str):
    """`configs/unet.py:<variant>` of this repository."""
    return get_config("unet", variant)


def _mvvdm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--motion-modules", metavar="CKPT",
                        help="mvvdm: Animate3D's animate3d_motion_modules.ckpt")
    parser.add_argument("--ip-adapter", metavar="BIN",
                        help="mvvdm: IP-Adapter ip-adapter_sd15.bin (or .safetensors)")
    parser.add_argument("--mvvdm-variant", default="mvvdm",
                        help="mvvdm: the configs/unet.py variant to build (default mvvdm)")


KINDS: dict[str, Kind] = {
    **{kind: _model_kind(kind) for kind in ("unet", "vae", "clip-text", "clip-vision")},
    "pipeline": Kind(convert_pipeline, "a diffusers pipeline root (model_index.json)",
                     allow_missing=True),
    "ldm-ckpt": Kind(convert_ldm_checkpoint,
                     "an original single-file Stable Diffusion checkpoint (needs --config)",
                     allow_missing=True),
    "mvvdm": Kind(convert_mvvdm, "MVDream U-Net folder + --motion-modules (Animate3D) + "
                  "--ip-adapter -> one MV-VDM U-Net", allow_missing=True,
                  add_arguments=_mvvdm_arguments),
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
