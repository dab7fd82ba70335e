"""IP-Adapter checkpoints (`ip-adapter_sd15.bin`) -> U-Net state-dict keys.

The checkpoint holds two dicts (a `.safetensors` variant flattens them with the prefixes
`image_proj.` and `ip_adapter.`):

    image_proj: proj.weight [4*768, 1024], proj.bias, norm.weight [768], norm.bias
    ip_adapter: "1.to_k_ip.weight" [320, 768], "1.to_v_ip.weight", "3.to_k_ip.weight", ...,
                "31.to_v_ip.weight"

The index of `ip_adapter` counts the U-Net's attention processors in diffusers'
`attn_processors` order, attn1 and attn2 of every transformer block alternating, so the
odd indices 1, 3, ..., 31 are the 16 spatial `attn2` (cross-attention) modules. That
order follows module registration in `UNet2DConditionModel.__init__`: `down_blocks`,
then `up_blocks`, then `mid_block` (the two lists are registered before the mid block is
built); inside a block, `attentions.i` then `transformer_blocks.k` (diffusers
`UNet2DConditionLoadersMixin._convert_ip_adapter_attn_to_diffusers`, which skips
motion-module processors without counting them; `cross_attention_names` below).

`ip_adapter_state_dict` renames everything to the keys of a diffusers U-Net after
`load_ip_adapter` (those of `reference/animate3d_full_unet_keys.json`):

    image_proj.proj.*         -> encoder_hid_proj.image_projection_layers.0.image_embeds.*
    image_proj.norm.*         -> encoder_hid_proj.image_projection_layers.0.norm.*
    ip_adapter.{2m+1}.to_k_ip.weight -> <m-th attn2>.processor.to_k_ip.0.weight  (to_v_ip alike)

and `IMAGE_PROJ_RENAMES` with `mvdream.PROCESSOR_RENAMES` map those onto the NNX U-Net
(`image_proj.proj`, `...attn2.to_k_ip.0`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from t4a_jax.models.unet_config import CROSS_DOWN, CROSS_UP, UNetConfig
from tools.convert_weights.core import ConversionError

_DIFFUSERS_IMAGE_PROJ = "encoder_hid_proj.image_projection_layers.0."
IMAGE_PROJ_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^encoder_hid_proj\.image_projection_layers\.0\.image_embeds\.", "image_proj.proj."),
    (r"^encoder_hid_proj\.image_projection_layers\.0\.norm\.", "image_proj.norm."),
)
_IMAGE_PROJ_KEYS = ("proj.weight", "proj.bias", "norm.weight", "norm.bias")


def cross_attention_names(config: UNetConfig) -> list[str]:
    """The spatial cross-attention (`attn2`) modules of a U-Net with `config`, in
    diffusers' `attn_processors` order: down blocks, up blocks, then the mid block."""
    per_block = range(config.transformer_layers_per_block)

    def block(prefix: str, attentions: int) -> list[str]:
        return [f"{prefix}.attentions.{j}.transformer_blocks.{k}.attn2"
                for j in range(attentions) for k in per_block]

    names = []
    for i, kind in enumerate(config.down_block_types):
        if kind == CROSS_DOWN:
            names += block(f"down_blocks.{i}", config.layers_per_block)
    for i, kind in enumerate(config.up_block_types):
        if kind == CROSS_UP:
            names += block(f"up_blocks.{i}", config.layers_per_block + 1)
    return names + block("mid_block", 1)


def ip_adapter_state_dict(ip_adapter: Mapping[str, Any], config: UNetConfig, *,
                          source: str = "IP-Adapter") -> dict[str, np.ndarray]:
    """The SD1.5 IP-Adapter checkpoint `{"image_proj": {...}, "ip_adapter": {...}}` (or
    its flat `image_proj.*` / `ip_adapter.*` form) as U-Net state-dict entries under
    diffusers' names (see the module docstring). Raises `ConversionError` naming every
    missing or unexpected key."""
    image_proj, attention = _split(ip_adapter, source)
    unexpected = sorted(set(image_proj) - set(_IMAGE_PROJ_KEYS))
    missing = sorted(set(_IMAGE_PROJ_KEYS) - set(image_proj))
    if unexpected or missing:
        raise ConversionError(
            f"{source}: image_proj must hold exactly {', '.join(_IMAGE_PROJ_KEYS)} (the SD1.5 "
            f"IP-Adapter, {config.ip_num_tokens} tokens; Plus/FaceID/Full variants are not "
            f"supported); unexpected: {unexpected}, missing: {missing}")
    out = {}
    for key, value in image_proj.items():
        layer, leaf = key.split(".")
        name = "image_embeds" if layer == "proj" else layer
        out[f"{_DIFFUSERS_IMAGE_PROJ}{name}.{leaf}"] = np.asarray(value)

    modules = cross_attention_names(config)
    wanted = {f"{2 * m + 1}.{proj}.weight": f"{module}.processor.{proj}.0.weight"
              for m, module in enumerate(modules) for proj in ("to_k_ip", "to_v_ip")}
    unused = sorted(set(attention) - set(wanted), key=_index_order)
    missing = sorted(set(wanted) - set(attention), key=_index_order)
    if unused or missing:
        raise ConversionError(
            f"{source}: ip_adapter keys do not fit the U-Net's {len(modules)} "
            f"cross-attentions (expected 1.to_k_ip.weight ... {2 * len(modules) - 1}."
            f"to_v_ip.weight); unused: {unused}, missing: {missing}")
    out.update({wanted[key]: np.asarray(value) for key, value in attention.items()})
    return out


def _split(ip_adapter: Mapping[str, Any], source: str,
           ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(image_proj, ip_adapter) dicts from the nested or the flat checkpoint layout."""
    if isinstance(ip_adapter.get("image_proj"), Mapping):
        unknown = sorted(set(ip_adapter) - {"image_proj", "ip_adapter"})
        if unknown or not isinstance(ip_adapter.get("ip_adapter"), Mapping):
            raise ConversionError(f"{source}: expected the dicts image_proj and ip_adapter, "
                                  f"got keys {sorted(ip_adapter)}")
        return ip_adapter["image_proj"], ip_adapter["ip_adapter"]
    parts: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    unknown = []
    for key, value in ip_adapter.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = value
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"{source}: keys outside image_proj.* and ip_adapter.*: "
                              f"{unknown[:12]}")
    return parts["image_proj"], parts["ip_adapter"]


def _index_order(key: str) -> tuple[int, str]:
    index, _, rest = key.partition(".")
    return (int(index), rest) if index.isdigit() else (-1, key)
