"""The evaluation networks' conversion jobs (`python -m t4a_jax.evaluate` reads them):

    python -m tools.convert_weights clip-vit-large-patch14 WEIGHTS/clip --kind clip
    python -m tools.convert_weights sa_0_4_vit_l_14_linear.pth WEIGHTS/aesthetic \
        --kind aesthetic-head

- `clip`: a transformers `CLIPModel` folder (openai/clip-vit-large-patch14, the same
  weights as OpenAI's `ViT-L-14.pt` that VBench loads) -> OUT/vision
  (`CLIPVisionModelWithProjection`), OUT/text (`CLIPTextModelWithProjection`) and
  OUT/tokenizer (vocab.json, merges.txt).
- `aesthetic-head`: LAION's `sa_0_4_vit_l_14_linear.pth` (a torch `nn.Linear(768, 1)`
  state dict: `weight` [1, 768], `bias` [1]) -> `models.aesthetic.AestheticHead`.
The DINO ViT of the I2V score has its own module (`dino.py`, `--kind dino`).
"""

from __future__ import annotations

import argparse
import os

from t4a_jax.models.aesthetic import AestheticHead, AestheticHeadConfig
from tools.convert_weights.clip import convert_clip_model, load_hf_folder
from tools.convert_weights.core import ConversionError, convert_state_dict, empty_model
from tools.convert_weights.job import Converted, Result, tokenizer_files
from tools.convert_weights.sources import load_weights

AESTHETIC_RENAMES = ((r"^(weight|bias)$", r"linear.\1"),)


def _float32_only(args: argparse.Namespace) -> None:
    if args.dtype != "float32":
        raise ValueError(f"--kind {args.kind}: converted in float32 only")


def convert_clip_model_folder(args: argparse.Namespace) -> Result:
    """`--kind clip` (module docstring)."""
    _float32_only(args)
    config, state = load_hf_folder(args.source)
    (vision, vision_report), (text, text_report), rest = convert_clip_model(
        state, config, source=args.source)
    notes = [f"not converted: {', '.join(rest)} (the contrastive temperature)"] if rest else []
    return Result([Converted("vision", vision, vision_report, args.source),
                   Converted("text", text, text_report, args.source)],
                  files=tokenizer_files(args.source, "tokenizer"), notes=notes)


def convert_aesthetic_head(args: argparse.Namespace) -> Result:
    """`--kind aesthetic-head` (module docstring); the width comes from `weight`."""
    _float32_only(args)
    if not os.path.isfile(args.source):
        raise FileNotFoundError(f"{args.source}: no such file (expected LAION's "
                                f"sa_0_4_vit_l_14_linear.pth)")
    state = load_weights(args.source)
    weight = state.get("weight")
    if weight is None or weight.ndim != 2 or weight.shape[0] != 1:
        raise ConversionError(f"{args.source}: expected a Linear(D, 1) state dict with "
                              f"'weight' [1, D] and 'bias' [1], got keys "
                              f"{ {k: tuple(v.shape) for k, v in state.items()} }")
    config = AestheticHeadConfig(in_features=int(weight.shape[1]))
    model = empty_model(lambda rngs: AestheticHead(config, rngs=rngs))
    report = convert_state_dict(state, model, renames=AESTHETIC_RENAMES, source=args.source)
    return Result([Converted("", model, report, args.source)])
