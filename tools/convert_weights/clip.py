"""transformers CLIP checkpoints -> `t4a_jax.models.clip` (text and image towers).

The NNX towers mirror transformers' key names, so the mapping is nearly empty:

- text: SD1.5 / transformers 4.x checkpoints name keys `text_model.embeddings...`;
  transformers 5.x saves `CLIPTextModel` without the `text_model.` prefix. Keys without it
  are prefixed (one rename), so both load.
- vision: `vision_model.*` and `visual_projection.weight`, no renames.
- a whole `CLIPModel` (`convert_clip_model`, `--kind clip`): both towers with their
  projections (`visual_projection`, `text_projection`), split by key prefix;
  `logit_scale` is not converted (named in the notes).
- `*.position_ids`: a buffer (0..L-1) that older transformers versions saved in checkpoints.
  It holds no learned value, so it is dropped explicitly (listed in the report as consumed
  by `<ignored: position_ids buffer>`); any other unknown key is an error.

Folders (`load_hf_folder`) are transformers' `save_pretrained` layout: `config.json` plus
`model.safetensors` (or a sharded `model.safetensors.index.json`) or `pytorch_model.bin`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.models.clip import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection,
                                 CLIPVisionConfig, CLIPVisionModelWithProjection)
from tools.convert_weights.core import (ConversionError, ConversionReport, convert_state_dict,
                                        empty_model)
from tools.convert_weights.sources import find_file, load_weights, read_json

IGNORED_KEYS = re.compile(r"(^|\.)position_ids$")
IGNORED_MARK = "<ignored: position_ids buffer>"
TEXT_RENAMES = ((r"^(?!text_model\.)", "text_model."),)
VISION_RENAMES = ()
VISION_PREFIXES = ("vision_model.", "visual_projection.")
TEXT_PREFIXES = ("text_model.", "text_projection.")
CLIP_MODEL_EXTRA_KEYS = ("logit_scale",)


def _split_ignored(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    kept = {k: v for k, v in state_dict.items() if not IGNORED_KEYS.search(k)}
    return kept, [k for k in state_dict if k not in kept]


def _convert(state_dict, model, renames, source) -> ConversionReport:
    kept, ignored = _split_ignored(state_dict)
    report = convert_state_dict(kept, model, renames=renames, source=source)
    report.consumed.update({k: IGNORED_MARK for k in ignored})
    # The conversion leaves numpy arrays in the parameters; hand back device arrays.
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(jnp.asarray, params))
    return report


def convert_clip_text(state_dict: Mapping[str, Any],
                      config: CLIPTextConfig | Mapping[str, Any], *, dtype=jnp.float32,
                      implementation: str | None = None,
                      source: str = "CLIP text encoder"
                      ) -> tuple[CLIPTextModel, ConversionReport]:
    """A transformers `CLIPTextModel` state dict (key -> array) -> (NNX model, report).

    `config`: a `CLIPTextConfig` or a transformers `config.json` dict. Raises
    `ConversionError` naming unused, missing or mis-shaped keys.
    """
    if not isinstance(config, CLIPTextConfig):
        config = CLIPTextConfig.from_hf_dict(config)
    model = empty_model(lambda rngs: CLIPTextModel(config, dtype=dtype,
                                                   implementation=implementation, rngs=rngs))
    return model, _convert(state_dict, model, TEXT_RENAMES, source)


def convert_clip_vision(state_dict: Mapping[str, Any],
                        config: CLIPVisionConfig | Mapping[str, Any], *, dtype=jnp.float32,
                        implementation: str | None = None,
                        source: str = "CLIP image encoder"
                        ) -> tuple[CLIPVisionModelWithProjection, ConversionReport]:
    """A transformers `CLIPVisionModelWithProjection` state dict -> (NNX model, report)."""
    if not isinstance(config, CLIPVisionConfig):
        config = CLIPVisionConfig.from_hf_dict(config)
    model = empty_model(lambda rngs: CLIPVisionModelWithProjection(
        config, dtype=dtype, implementation=implementation, rngs=rngs))
    return model, _convert(state_dict, model, VISION_RENAMES, source)


def load_hf_folder(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A transformers model folder -> (config.json dict, state dict of numpy arrays).

    Weights from `model.safetensors`, a sharded `model.safetensors.index.json`, or else
    `pytorch_model.bin` (see `sources.load_weights`).
    """
    path = os.fspath(path)
    config = read_json(os.path.join(path, "config.json"))
    weights = find_file(path, ["model.safetensors", "model.safetensors.index.json",
                               "pytorch_model.bin"], "weights")
    return config, load_weights(weights)


def load_clip_text_folder(path: str | os.PathLike, **kwargs
                          ) -> tuple[CLIPTextModel, ConversionReport]:
    """`load_hf_folder` + `convert_clip_text` (e.g. SD1.5's `text_encoder/`)."""
    config, state = load_hf_folder(path)
    return convert_clip_text(state, config, source=os.fspath(path), **kwargs)


def load_clip_vision_folder(path: str | os.PathLike, **kwargs
                            ) -> tuple[CLIPVisionModelWithProjection, ConversionReport]:
    """`load_hf_folder` + `convert_clip_vision` (e.g. IP-Adapter's `image_encoder/`)."""
    config, state = load_hf_folder(path)
    return convert_clip_vision(state, config, source=os.fspath(path), **kwargs)


def convert_clip_model(state_dict: Mapping[str, Any], config: Mapping[str, Any], *,
                       source: str = "CLIP model"
                       ) -> tuple[tuple[CLIPVisionModelWithProjection, ConversionReport],
                                  tuple[CLIPTextModelWithProjection, ConversionReport],
                                  list[str]]:
    """A transformers `CLIPModel` state dict (both towers, e.g. openai/clip-vit-large-
    patch14) and its config.json dict -> the image tower with `visual_projection`, the
    text tower with `text_projection`, and the keys of neither (`logit_scale`, the
    contrastive temperature; any other such key is an error)."""
    vision = {k: v for k, v in state_dict.items() if k.startswith(VISION_PREFIXES)}
    text = {k: v for k, v in state_dict.items() if k.startswith(TEXT_PREFIXES)}
    rest = sorted(set(state_dict) - set(vision) - set(text))
    unknown = [k for k in rest if k not in CLIP_MODEL_EXTRA_KEYS]
    if unknown:
        raise ConversionError(f"{source}: keys of neither tower: {', '.join(unknown[:8])}")
    if not vision or not text:
        raise ConversionError(f"{source}: a CLIPModel needs both towers' keys "
                              f"({', '.join(VISION_PREFIXES + TEXT_PREFIXES)}); found "
                              f"{len(vision)} vision and {len(text)} text keys")
    text_config = CLIPTextConfig.from_hf_dict(config)
    text_model = empty_model(lambda rngs: CLIPTextModelWithProjection(text_config, rngs=rngs))
    return (convert_clip_vision(vision, config, source=f"{source} (vision)"),
            (text_model, _convert(text, text_model, (), f"{source} (text)")), rest)

