"""What a conversion job of `python -m tools.convert_weights` returns, and the steps its
jobs share.

A job (`pipeline.py`, `ldm.py`, `mvvdm.py`) takes the parsed arguments and returns a
`Result`: the `Converted` models to save, the files to copy and notes on what it left
out, without writing anything; `cli.main` prints and writes it. The shared steps make one
`Converted` each: a diffusers U-Net folder (`unet_from_folder`), a VAE or CLIP state dict
with its config (`vae_from_state`, `clip_from_state`); `tokenizer_files` lists the files
of a CLIP tokenizer to copy. `DTYPES` maps the `--dtype` names to compute dtypes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from tools.convert_weights.clip import convert_clip_text, convert_clip_vision
from tools.convert_weights.core import ConversionReport, empty_model
from tools.convert_weights.unet import convert_unet_with_report, load_diffusers_unet
from tools.convert_weights.vae import convert_vae_into

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TOKENIZER_FILES = ("vocab.json", "merges.txt")
TOKENIZER_OPTIONAL_FILES = ("special_tokens_map.json", "tokenizer_config.json")


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


def unet_from_folder(folder: str, motion_adapter: str | None, args: argparse.Namespace,
                     component: str, source: str) -> Converted:
    """The diffusers U-Net folder `folder` (plus the MotionAdapter folder
    `motion_adapter`), at `--dtype`, honouring `--allow-missing`."""
    config, state = load_diffusers_unet(folder, motion_adapter=motion_adapter,
                                        dtype=DTYPES[args.dtype])
    model, report = convert_unet_with_report(state, config, allow_missing=args.allow_missing,
                                             source=source)
    return Converted(component, model, report, source)


def vae_from_state(config: VAEConfig, state: Mapping[str, np.ndarray],
                   args: argparse.Namespace, component: str, source: str) -> Converted:
    """A diffusers `AutoencoderKL` state dict, at `--dtype`."""
    config = dataclasses.replace(config, dtype=DTYPES[args.dtype])
    model = empty_model(lambda rngs: AutoencoderKL(config, rngs=rngs))
    return Converted(component, model, convert_vae_into(state, model, source=source), source)


def clip_from_state(kind: str, config: Mapping[str, Any], state: Mapping[str, np.ndarray],
                    component: str, source: str) -> Converted:
    """A transformers CLIP text (`kind` 'clip-text') or vision tower state dict."""
    convert = convert_clip_text if kind == "clip-text" else convert_clip_vision
    model, report = convert(state, config, source=source)
    return Converted(component, model, report, source)


def clip_dtype_note(component: str) -> str:
    """The note for a CLIP tower converted under a `--dtype` other than float32."""
    return (f"{component}: written with float32 compute (--dtype does not apply to the CLIP "
            f"towers)")


def tokenizer_files(folder: str, component: str) -> dict[str, str]:
    """{OUT-relative path: file} of a CLIP tokenizer folder, checked by reading it."""
    CLIPTokenizer.from_folder(folder)  # raises naming the file if vocab/merges are bad
    names = TOKENIZER_FILES + tuple(n for n in TOKENIZER_OPTIONAL_FILES
                                    if os.path.isfile(os.path.join(folder, n)))
    return {f"{component}/{n}": os.path.join(folder, n) for n in names}
