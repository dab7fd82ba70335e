"""DINO ViT checkpoints -> `t4a_jax.models.dino.DINOViT` (VBench's I2V feature network).

    python -m tools.convert_weights dino_vitbase16_pretrain.pth ckpt/dino --kind dino

Sources: the original backbone file (`dino_vitbase16_pretrain.pth`, facebookresearch/
dino: keys `cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}.*`, `norm.*`), a full training checkpoint (its
`teacher` dict, keys prefixed `module.` / `backbone.`; the projection head `head.*` is
left out and listed in the report) or timm's `vit_base_patch16_224.dino` state dict
(the same key names), or transformers' `ViTModel` (`facebook/dino-vitb16`: keys
`embeddings.*`, `encoder.layer.{i}.{layernorm_before, attention.attention.{query, key,
value}, attention.output.dense, layernorm_after, intermediate.dense, output.dense}.*`,
`layernorm.*`, maybe under `vit.`; its unused `pooler.*` left out; transformers 5 names
its modules `layers.{i}.{attention.{q,k,v,o}_proj, layernorm_before, layernorm_after,
mlp.fc1, mlp.fc2}`), first renamed to the original's names (`HF_RENAMES`). The fused `qkv` [3D, D] is split into `q_proj`,
`k_proj`, `v_proj` in that order (the original's reshape to (3, heads, head_dim)).

The sizes come from the tensors: width from `cls_token`, depth from the blocks, MLP
ratio from `fc1`, patch and image size from `patch_embed` and `pos_embed`; the head
count is width / 64 (every released DINO ViT has 64-wide heads) unless a config is
given.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.models.dino import DINOConfig, DINOViT
from tools.convert_weights.core import (ConversionError, ConversionReport, apply_renames,
                                        convert_state_dict, empty_model)
from tools.convert_weights.job import Converted, Result
from tools.convert_weights.sources import find_file, load_weights, read_json

HEAD_DIM = 64
PREFIXES = re.compile(r"^(module\.)?(backbone\.)?")
HEAD_KEYS = re.compile(r"^(head|pooler)\.")
HEAD_MARK = "<ignored: projection head / pooler, not part of the feature>"
# transformers' ViTModel names -> the original's (q/k/v already split).
HF_RENAMES = (
    (r"^vit\.", ""),
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"blocks.\1.attn.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"blocks.\1.attn.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"blocks.\1.attn.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^layernorm\.", "norm."),
    # transformers 5's module names (its hub files keep the names above)
    (r"^layers\.(\d+)\.attention\.([qkv])_proj\.", r"blocks.\1.attn.\2_proj."),
    (r"^layers\.(\d+)\.attention\.o_proj\.", r"blocks.\1.attn.proj."),
    (r"^layers\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^layers\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^layers\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
)
RENAMES = (
    (r"^patch_embed\.proj\.", "patch_embed."),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"^blocks\.(\d+)\.attn\.([qkv])_proj\.", r"encoder.layers.\1.self_attn.\2_proj."),
    (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
)


def backbone_state(state: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """The backbone's tensors with the `module.` / `backbone.` prefixes removed (a
    training checkpoint's `teacher` dict if present), and the head keys left out."""
    if isinstance(state.get("teacher"), Mapping):
        state = state["teacher"]
    stripped = {apply_renames(PREFIXES.sub("", k), HF_RENAMES): v for k, v in state.items()}
    head = [k for k in stripped if HEAD_KEYS.match(k)]
    return {k: np.asarray(v) for k, v in stripped.items() if k not in head}, head


def split_qkv(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`blocks.{i}.attn.qkv.{weight,bias}` [3D(, D)] -> `...attn.{q,k,v}_proj.*`."""
    out = {}
    for key, value in state.items():
        match = re.fullmatch(r"(blocks\.\d+\.attn)\.qkv\.(weight|bias)", key)
        if not match:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise ConversionError(f"{key}: first axis {value.shape[0]} is not 3 x width")
        for name, part in zip("qkv", np.split(value, 3, axis=0)):
            out[f"{match[1]}.{name}_proj.{match[2]}"] = part
    return out


def infer_config(state: Mapping[str, np.ndarray], source: str) -> DINOConfig:
    """The ViT's sizes from its tensors (module docstring)."""
    for key in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            raise ConversionError(f"{source}: no {key!r}; not a DINO ViT backbone "
                                  f"(keys: {', '.join(sorted(state)[:8])}, ...)")
    width = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    depth = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    return DINOConfig(hidden_size=width, num_hidden_layers=depth,
                      num_attention_heads=max(1, width // HEAD_DIM),
                      mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] // width,
                      image_size=grid * patch, patch_size=patch)


def convert_dino(state: Mapping[str, Any], config: DINOConfig | None = None, *,
                 source: str = "DINO ViT") -> tuple[DINOViT, ConversionReport]:
    """A DINO / timm ViT state dict -> (NNX model, report); unused, missing or
    mis-shaped keys raise `ConversionError` naming them."""
    backbone, head = backbone_state(state)
    config = config or infer_config(backbone, source)
    model = empty_model(lambda rngs: DINOViT(config, rngs=rngs))
    report = convert_state_dict(split_qkv(backbone), model, renames=RENAMES, source=source)
    report.consumed.update({k: HEAD_MARK for k in head})
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model, nnx.Param)))
    return model, report


def convert_dino_source(args: argparse.Namespace) -> Result:
    """`--kind dino`: the checkpoint file `args.source`, or a transformers ViTModel
    folder (its config.json gives the head count)."""
    if args.dtype != "float32":
        raise ValueError("--kind dino: the DINO ViT is converted in float32 only")
    config = None
    if os.path.isdir(args.source):
        hf = read_json(os.path.join(args.source, "config.json"))
        state = load_weights(find_file(args.source, ["model.safetensors",
                                                     "pytorch_model.bin"], "weights"))
        inferred = infer_config(backbone_state(state)[0], args.source)
        config = dataclasses.replace(inferred, num_attention_heads=hf["num_attention_heads"],
                                     layer_norm_eps=hf.get("layer_norm_eps", 1e-12))
    else:
        state = load_weights(args.source)
    model, report = convert_dino(state, config, source=args.source)
    return Result([Converted("", model, report, args.source)])
