"""diffusers `AutoencoderKL` checkpoints -> `t4a_jax.models.vae.AutoencoderKL`.

The NNX module mirrors diffusers' key names, so the only renames are for the older
diffusers attention names of the mid blocks (`query`, `key`, `value`, `proj_attn`), which
diffusers itself still loads. A diffusers VAE folder is `config.json` plus
`diffusion_pytorch_model[.<variant>].safetensors` (read without torch) or `.bin`
(read with `torch.load(weights_only=True)`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from flax import nnx

from t4a_jax.models.vae import AutoencoderKL, VAEConfig
from tools.convert_weights.core import ConversionReport, convert_state_dict
from tools.convert_weights.sources import load_diffusers_weights, read_diffusers_config

# Older diffusers (and diffusers-format conversions of LDM) name the mid-block attention
# projections query/key/value/proj_attn; diffusers maps them in
# ModelMixin._convert_deprecated_attention_blocks.
VAE_RENAMES: tuple[tuple[str, str], ...] = (
    (r"(mid_block\.attentions\.\d+)\.query\.", r"\1.to_q."),
    (r"(mid_block\.attentions\.\d+)\.key\.", r"\1.to_k."),
    (r"(mid_block\.attentions\.\d+)\.value\.", r"\1.to_v."),
    (r"(mid_block\.attentions\.\d+)\.proj_attn\.", r"\1.to_out.0."),
)



def convert_vae(state_dict: Mapping[str, np.ndarray], config: VAEConfig, *,
                source: str = "VAE checkpoint", rngs: nnx.Rngs | None = None,
                ) -> AutoencoderKL:
    """Build an `AutoencoderKL` for `config` and fill it from a diffusers state dict
    (torch key -> numpy array, either attention naming). Raises `ConversionError` naming
    every unused key, missing parameter and shape mismatch."""
    model = AutoencoderKL(config, rngs=rngs or nnx.Rngs(0))
    convert_vae_into(state_dict, model, source=source)
    return model


def convert_vae_into(state_dict: Mapping[str, np.ndarray], model: AutoencoderKL, *,
                     source: str = "VAE checkpoint") -> ConversionReport:
    """Load a diffusers VAE state dict into an existing `model` in place."""
    return convert_state_dict(state_dict, model, renames=VAE_RENAMES, source=source)


def vae_config_from_diffusers(config: Mapping[str, Any], *, source: str = "config",
                              **overrides) -> VAEConfig:
    """A `VAEConfig` from the dict of a diffusers `AutoencoderKL` `config.json`.

    Refuses settings this implementation does not have (other block types or
    activations, per-channel latent statistics), naming `source`."""
    if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
        raise ValueError(f"{source}: _class_name is {config['_class_name']!r}, "
                         f"expected 'AutoencoderKL'")
    checks = {
        "down_block_types": lambda v: all(t == "DownEncoderBlock2D" for t in v),
        "up_block_types": lambda v: all(t == "UpDecoderBlock2D" for t in v),
        "act_fn": lambda v: v == "silu",
        "latents_mean": lambda v: v is None,
        "latents_std": lambda v: v is None,
    }
    for name, ok in checks.items():
        if name in config and not ok(config[name]):
            raise ValueError(f"{source}: unsupported {name}={config[name]!r}")
    channels = tuple(config.get("block_out_channels", (64,)))
    for name in ("down_block_types", "up_block_types"):
        if name in config and len(config[name]) != len(channels):
            raise ValueError(f"{source}: {name} has {len(config[name])} entries but "
                             f"block_out_channels has {len(channels)}")
    fields = dict(
        in_channels=config.get("in_channels", 3),
        out_channels=config.get("out_channels", 3),
        latent_channels=config.get("latent_channels", 4),
        block_out_channels=channels,
        # diffusers' AutoencoderKL defaults, used when a config.json omits a field.
        layers_per_block=config.get("layers_per_block", 1),
        norm_num_groups=config.get("norm_num_groups", 32),
        scaling_factor=config.get("scaling_factor", 0.18215),
        shift_factor=config.get("shift_factor") or 0.0,
        use_quant_conv=config.get("use_quant_conv", True),
        use_post_quant_conv=config.get("use_post_quant_conv", True),
        mid_block_add_attention=config.get("mid_block_add_attention", True),
    )
    return VAEConfig(**{**fields, **overrides})


def load_diffusers_vae(folder: str | os.PathLike, *, variant: str | None = None,
                       ) -> tuple[VAEConfig, dict[str, np.ndarray]]:
    """Read a diffusers VAE folder into (VAEConfig, state dict of numpy arrays).

    Prefers `diffusion_pytorch_model[.variant].safetensors` (no torch needed) over
    `.bin`. Raises FileNotFoundError naming the folder and the files it looked for."""
    config = vae_config_from_diffusers(read_diffusers_config(folder, component="vae"),
                                       source=os.path.join(os.fspath(folder), "config.json"))
    return config, load_diffusers_weights(folder, component="vae", variant=variant)
