"""Animate3D's MV-VDM from its three released checkpoints -> one `UNet`
(`configs/unet.py:mvvdm`).

    unet, report = convert_animate3d(mvdream_unet, motion, ip_adapter, config)

- `base_state_dict`: the MVDream SD1.5 4-view U-Net in diffusers layout — the standard
  SD1.5 `UNet2DConditionModel` keys plus `camera_embedding.linear_{1,2}.{weight,bias}`
  (e.g. `load_diffusers_weights(folder, component="unet")`).
- `motion_state_dict`: `animate3d_motion_modules.ckpt` (888 tensors, maybe under
  `state_dict`; names and shapes in `reference/animate3d_motion_modules_keys.json`): the
  MV2V adapter of every spatial `attn1` (`attn1.processor.to_q_i2v.weight`,
  `attn1.processor.to_out_i2v.{weight,bias}`) and the 21 motion modules, whose two
  attentions carry Animate3D's spatio-temporal processor (`attn{1,2}.processor.to_q_sp`,
  `...to_out_sp`, `...alpha_blender.mix_factor`, `...time_pos_embed.pe`).
- `ip_adapter`: `ip-adapter_sd15.bin` (see `ip_adapter.py`), or None.

Together they hold the keys of `reference/animate3d_full_unet_keys.json` (the IP-Adapter
renamed as diffusers' `load_ip_adapter` names it), which `unet.convert_unet_with_report`
maps onto the NNX U-Net: `.processor.` is dropped, the `time_pos_embed.pe` buffers are
checked against the module's table, and every key must be consumed and every parameter
filled (else `ConversionError` naming the keys), except parameters matched by an
explicit `allow_missing` regex.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import UNetConfig
from tools.convert_weights.core import ConversionError, ConversionReport
from tools.convert_weights.ip_adapter import ip_adapter_state_dict
from tools.convert_weights.unet import convert_unet_with_report


def animate3d_state_dict(base_state_dict: Mapping[str, np.ndarray],
                         motion_state_dict: Mapping[str, Any],
                         ip_adapter: Mapping[str, Any] | None, config: UNetConfig, *,
                         source: str = "Animate3D MV-VDM") -> dict[str, np.ndarray]:
    """The three checkpoints (see the module docstring) as one diffusers-named state
    dict. A key present in two of them raises `ConversionError` naming it."""
    wrapped = motion_state_dict.get("state_dict")
    motion = wrapped if isinstance(wrapped, Mapping) else motion_state_dict
    parts = [("MVDream U-Net", base_state_dict), ("Animate3D motion modules", motion)]
    if ip_adapter is not None:
        parts.append(("IP-Adapter", ip_adapter_state_dict(ip_adapter, config,
                                                          source=f"{source}: IP-Adapter")))
    merged: dict[str, np.ndarray] = {}
    for name, part in parts:
        clashes = sorted(set(part) & set(merged))
        if clashes:
            raise ConversionError(f"{source}: {name} keys also in an earlier checkpoint: "
                                  f"{clashes[:12]}")
        merged.update(part)
    return merged


def convert_animate3d(base_state_dict: Mapping[str, np.ndarray],
                      motion_state_dict: Mapping[str, Any],
                      ip_adapter: Mapping[str, Any] | None, config: UNetConfig, *,
                      allow_missing: Iterable[str] = (),
                      source: str = "Animate3D MV-VDM") -> tuple[UNet, ConversionReport]:
    """One MV-VDM `UNet` for `config` from the MVDream U-Net, the Animate3D motion
    checkpoint and the IP-Adapter (None when the config has no IP-Adapter, or to leave
    it to `allow_missing`), and the conversion report. See `unet.convert_unet` for the
    values of allowed-missing parameters."""
    state = animate3d_state_dict(base_state_dict, motion_state_dict, ip_adapter, config,
                                 source=source)
    return convert_unet_with_report(state, config, allow_missing=allow_missing,
                                    source=source)
