"""diffusers U-Net checkpoints -> `t4a_jax.models.unet.UNet`, and diffusers U-Net
`config.json` -> `UNetConfig` (`unet_config_from_diffusers`, which refuses the settings
this implementation does not have).

Sources: a `UNet2DConditionModel` state dict (SD1.5), a `UNetMotionModel` state dict, the
union of a U-Net and an AnimateDiff `MotionAdapter` state dict (the adapter's keys
`down_blocks.i.motion_modules.j.*`, `mid_block.motion_modules.0.*`,
`up_blocks.i.motion_modules.j.*` are `UNetMotionModel`'s), or the MV-VDM's keys (those of
`reference/animate3d_full_unet_keys.json`, assembled from its three checkpoints by
`animate3d.py`).

Renames (`UNET_RENAMES`): weights that diffusers keeps on attention processors
(`attn1.processor.to_q_i2v.weight` -> `attn1.to_q_i2v`, `mvdream.PROCESSOR_RENAMES`) and
the IP-Adapter image projection (`encoder_hid_proj.image_projection_layers.0.image_embeds`
-> `image_proj.proj`, `ip_adapter.IMAGE_PROJ_RENAMES`). Otherwise the NNX U-Net mirrors
diffusers' names, so every parameter maps mechanically through `core.convert_state_dict`
(`weight` -> `kernel`/`scale`, Linear [out, in] -> [in, out], conv OIHW -> HWIO).

Position tables: the motion modules' sinusoidal tables are constants of the NNX modules
(`transformer.sinusoidal_table`), not parameters. Their checkpoint buffers,
`<motion module>.transformer_blocks.k.pos_embed.pe` (diffusers) or
`...transformer_blocks.k.attn{1,2}.processor.time_pos_embed.pe` (Animate3D), all [1, L, C],
are consumed here after checking them against the module's table (Animate3D's
`time_pos_embed.table` of a spatio-temporal attention, else the temporal attention's
sinusoid of length `motion_max_seq_length`); anything else raises `ConversionError`
naming the key (a trained table would not load silently as a constant).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from t4a_jax.models.mvdream import PROCESSOR_RENAMES
from t4a_jax.models.transformer import sinusoidal_table
from t4a_jax.models.unet import UNet
from t4a_jax.models.unet_config import CROSS_DOWN, CROSS_UP, PLAIN_DOWN, PLAIN_UP, UNetConfig
from tools.convert_weights.core import (ConversionError, ConversionReport, convert_state_dict,
                                        empty_model, torch_key_to_path)
from tools.convert_weights.ip_adapter import IMAGE_PROJ_RENAMES
from tools.convert_weights.sources import load_diffusers_weights, read_diffusers_config

UNET_RENAMES: tuple[tuple[str, str], ...] = PROCESSOR_RENAMES + IMAGE_PROJ_RENAMES

POSITION_TABLE_KEY = re.compile(
    r"^(?P<block>.+\.motion_modules\.\d+\.transformer_blocks\.\d+)\."
    r"(?:pos_embed|attn[12]\.processor\.time_pos_embed)\.pe$")
_POSITION_TABLE_ATOL = 1e-5


def convert_unet(state_dict: Mapping[str, np.ndarray], config: UNetConfig, *,
                 allow_missing: Iterable[str] = (), source: str = "U-Net checkpoint") -> UNet:
    """A `UNet` for `config` filled from a diffusers state dict (torch key -> numpy
    array). Raises `ConversionError` naming every unused key, missing parameter (unless
    matched by a regex of `allow_missing`), shape mismatch and position table that is
    not the module's.

    The model is built abstractly (no random initialisation: converting SD1.5 does not
    first draw 1.3e9 random numbers); every parameter is then filled from the checkpoint.
    Allowed-missing parameters are zero, which makes each MV-VDM addition start as a
    no-op (`to_out_i2v`, `to_v_ip`, the camera MLP's `linear_2` and a motion module's
    `proj_out` are then zero), except `to_q_i2v`, which copies its `to_q` as the model's
    own initialisation does."""
    return convert_unet_with_report(state_dict, config, allow_missing=allow_missing,
                                    source=source)[0]


def convert_unet_with_report(state_dict: Mapping[str, np.ndarray], config: UNetConfig, *,
                             allow_missing: Iterable[str] = (),
                             source: str = "U-Net checkpoint",
                             ) -> tuple[UNet, ConversionReport]:
    """`convert_unet` that also returns what was converted and what was let pass."""
    model = empty_model(lambda rngs: UNet(config, rngs=rngs))
    report = convert_unet_into(state_dict, model, allow_missing=allow_missing, source=source)
    params = nnx.state(model, nnx.Param)
    flat = dict(nnx.to_flat_state(params))
    for name in report.allowed_missing:
        if name.endswith(".to_q_i2v.kernel"):
            path = torch_key_to_path(name)
            flat[path][...] = flat[path[:-2] + ("to_q", "kernel")][...]
    nnx.update(model, params)
    nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
    return model, report


def convert_unet_into(state_dict: Mapping[str, np.ndarray], model: UNet, *,
                      allow_missing: Iterable[str] = (),
                      source: str = "U-Net checkpoint") -> ConversionReport:
    """Load a diffusers U-Net state dict into an existing `model` in place (parameters
    matched by `allow_missing` keep their values)."""
    parameters, tables = _split_position_tables(state_dict, model, source)
    report = convert_state_dict(parameters, model, renames=UNET_RENAMES,
                                allow_missing=allow_missing, source=source)
    report.consumed.update(tables)
    return report


def _split_position_tables(state_dict: Mapping[str, np.ndarray], model: UNet, source: str,
                           ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(the state dict without the position tables of existing motion blocks,
    {table key: what it was checked against}). Tables of blocks the model lacks stay in
    the dict, so the conversion reports them as unused."""
    params = {".".join(map(str, path)) for path, _ in
              nnx.to_flat_state(nnx.state(model, nnx.Param))}
    length = model.config.motion_max_seq_length
    rest, tables, problems = {}, {}, []
    for key, value in state_dict.items():
        match = POSITION_TABLE_KEY.match(key)
        if match is None or f"{match['block']}.attn1.to_q.kernel" not in params:
            rest[key] = value
            continue
        value = np.asarray(value, np.float32)
        expected = _module_table(model, key, length, value.shape[-1])
        if value.shape != expected.shape:
            problems.append(f"{key} {value.shape} (expected {expected.shape} for "
                            f"motion_max_seq_length={length})")
        elif not np.allclose(value, expected, rtol=0, atol=_POSITION_TABLE_ATOL):
            problems.append(f"{key} is not the sinusoidal table (trained tables are not "
                            f"supported)")
        else:
            tables[key] = f"{match['block']} (sinusoidal position table, checked)"
    if problems:
        raise ConversionError(f"{source}: {len(problems)} bad position tables: "
                              + "; ".join(problems))
    return rest, tables


def _module_table(model: UNet, key: str, length: int, channels: int) -> np.ndarray:
    """The table [1, L, C] the model holds for the checkpoint buffer `key`: the `table` of
    the module the key names (Animate3D's `time_pos_embed`), else the temporal
    attention's sinusoid of length `length`."""
    node: Any = model
    for part in torch_key_to_path(key, UNET_RENAMES)[:-1]:
        node = node[part] if isinstance(part, int) else getattr(node, part, None)
        if node is None:
            return sinusoidal_table(length, channels)[None]
    return node.table


def load_diffusers_unet(folder: str | os.PathLike, *,
                        motion_adapter: str | os.PathLike | None = None,
                        variant: str | None = None, **overrides: Any,
                        ) -> tuple[UNetConfig, dict[str, np.ndarray]]:
    """Read a diffusers U-Net folder (`UNet2DConditionModel` or `UNetMotionModel`:
    config.json + diffusion_pytorch_model[.variant].safetensors, or .bin read with
    `torch.load(weights_only=True)`) into (UNetConfig, state dict of numpy arrays).

    `motion_adapter`: an AnimateDiff `MotionAdapter` folder whose motion modules are
    added (its config sets the motion fields, as `UNetMotionModel.from_unet2d` does).
    `overrides` set UNetConfig fields (e.g. dtype, remat)."""
    raw_config = read_diffusers_config(folder, component="unet")
    if raw_config.get("_class_name") == "MotionAdapter":
        raise ValueError(f"{folder} holds a MotionAdapter: pass it as motion_adapter= with "
                         f"the U-Net folder")
    config = unet_config_from_diffusers(raw_config, source=os.path.join(folder, "config.json"))
    state_dict = load_diffusers_weights(folder, component="unet", variant=variant)
    if motion_adapter is not None:
        adapter_config = read_diffusers_config(motion_adapter, component="motion adapter")
        config = _with_motion_adapter(config, adapter_config,
                                      os.path.join(motion_adapter, "config.json"))
        adapter_state = load_diffusers_weights(motion_adapter, component="motion adapter",
                                               variant=variant)
        clashes = sorted(set(adapter_state) & set(state_dict))
        if clashes:
            raise ValueError(f"{motion_adapter}: keys also in the U-Net {folder}: "
                             f"{clashes[:5]}")
        state_dict.update(adapter_state)
    if overrides:
        config = dataclasses.replace(config, **overrides)
    return config, state_dict


def unet_config_from_diffusers(config: Mapping[str, Any], *, source: str = "config",
                               **overrides: Any) -> UNetConfig:
    """The `UNetConfig` of the dict of a diffusers `UNet2DConditionModel` or
    `UNetMotionModel` `config.json`. Settings this implementation does not have raise
    ValueError naming them and `source`; `overrides` set UNetConfig fields (e.g. dtype)."""
    class_name = config.get("_class_name", "UNet2DConditionModel")
    if class_name not in ("UNet2DConditionModel", "UNetMotionModel"):
        raise ValueError(f"{source}: _class_name is {class_name!r}, expected "
                         f"'UNet2DConditionModel' or 'UNetMotionModel'")
    motion = class_name == "UNetMotionModel"
    for name, ok in {**_SUPPORTED, **(_SUPPORTED_MOTION if motion else {})}.items():
        if name in config and not ok(config[name]):
            raise ValueError(f"{source}: unsupported {name}={config[name]!r}")
    default = UNetConfig()

    def get(name: str, fallback: Any) -> Any:
        """config[name] (lists as tuples), or diffusers' default where omitted/null."""
        value = config.get(name)
        if value is None:
            return fallback
        return tuple(value) if isinstance(value, list) else value

    fields = dict(
        in_channels=get("in_channels", 4),
        out_channels=get("out_channels", 4),
        block_out_channels=get("block_out_channels", default.block_out_channels),
        down_block_types=tuple(_MOTION_BLOCK_NAMES.get(t, t) for t in
                               get("down_block_types", default.down_block_types)),
        up_block_types=tuple(_MOTION_BLOCK_NAMES.get(t, t) for t in
                             get("up_block_types", default.up_block_types)),
        layers_per_block=get("layers_per_block", 2),
        # diffusers: "num_attention_heads = num_attention_heads or attention_head_dim"
        num_attention_heads=get("num_attention_heads", get("attention_head_dim", 8)),
        cross_attention_dim=get("cross_attention_dim", 1280),
        transformer_layers_per_block=get("transformer_layers_per_block", 1),
        use_linear_projection=get("use_linear_projection", False),
        norm_num_groups=get("norm_num_groups", 32),
        norm_eps=get("norm_eps", 1e-5),
        flip_sin_to_cos=get("flip_sin_to_cos", True),
        freq_shift=get("freq_shift", 0),
    )
    if motion:
        fields.update(
            motion_modules=True,
            motion_num_attention_heads=get("motion_num_attention_heads", 8),
            motion_max_seq_length=get("motion_max_seq_length", 32),
            motion_transformer_layers=get("temporal_transformer_layers_per_block", 1),
            # UNetMotionModel builds its motion modules with the U-Net's groups.
            motion_norm_num_groups=fields["norm_num_groups"],
            use_motion_mid_block=get("use_motion_mid_block", True),
        )
    return UNetConfig(**{**fields, **overrides})


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# diffusers config fields that this implementation supports only at these values.
_SUPPORTED = {
    "act_fn": lambda v: v == "silu",
    "addition_embed_type": lambda v: v is None,
    "attention_type": lambda v: v == "default",
    "center_input_sample": lambda v: not v,
    "class_embed_type": lambda v: v is None,
    "class_embeddings_concat": lambda v: not v,
    "conv_in_kernel": lambda v: v == 3,
    "conv_out_kernel": lambda v: v == 3,
    "cross_attention_dim": _int,
    "cross_attention_norm": lambda v: v is None,
    "downsample_padding": lambda v: v == 1,
    "dual_cross_attention": lambda v: not v,
    "encoder_hid_dim": lambda v: v is None,
    "encoder_hid_dim_type": lambda v: v is None,
    "layers_per_block": _int,
    "mid_block_only_cross_attention": lambda v: not v,
    "mid_block_scale_factor": lambda v: v == 1,
    "mid_block_type": lambda v: v == "UNetMidBlock2DCrossAttn",
    "num_class_embeds": lambda v: v is None,
    "only_cross_attention": lambda v: not v,
    "resnet_out_scale_factor": lambda v: v == 1,
    "resnet_skip_time_act": lambda v: not v,
    "resnet_time_scale_shift": lambda v: v == "default",
    "reverse_transformer_layers_per_block": lambda v: v is None,
    "time_cond_proj_dim": lambda v: v is None,
    "time_embedding_act_fn": lambda v: v is None,
    "time_embedding_dim": lambda v: v is None,
    "time_embedding_type": lambda v: v == "positional",
    "timestep_post_act": lambda v: v is None,
    "transformer_layers_per_block": _int,
}
_SUPPORTED_MOTION = {
    "mid_block_layers": lambda v: v == 1,
    "reverse_motion_num_attention_heads": lambda v: v is None,
    "reverse_temporal_transformer_layers_per_block": lambda v: v is None,
    "temporal_transformer_layers_per_block": _int,
    "temporal_transformer_layers_per_mid_block": lambda v: v in (None, 1),
    "transformer_layers_per_mid_block": lambda v: v in (None, 1),
}
# UNetMotionModel's block types -> the UNet2DConditionModel names UNetConfig takes.
_MOTION_BLOCK_NAMES = {"CrossAttnDownBlockMotion": CROSS_DOWN, "DownBlockMotion": PLAIN_DOWN,
                       "CrossAttnUpBlockMotion": CROSS_UP, "UpBlockMotion": PLAIN_UP}


def _with_motion_adapter(config: UNetConfig, adapter: Mapping[str, Any],
                         source: str) -> UNetConfig:
    """`config` with the motion modules of a diffusers `MotionAdapter` config."""
    if adapter.get("_class_name", "MotionAdapter") != "MotionAdapter":
        raise ValueError(f"{source}: _class_name is {adapter['_class_name']!r}, expected "
                         f"'MotionAdapter'")
    checks = {
        "block_out_channels": lambda v: tuple(v) == config.block_out_channels,
        "motion_layers_per_block": lambda v: v == config.layers_per_block,
        "motion_mid_block_layers_per_block": lambda v: v == 1,
        "motion_transformer_layers_per_mid_block": lambda v: v == adapter.get(
            "motion_transformer_layers_per_block", 1),
        "motion_transformer_layers_per_block": lambda v: isinstance(v, int),
        "conv_in_channels": lambda v: v is None,
    }
    for name, ok in checks.items():
        if name in adapter and not ok(adapter[name]):
            raise ValueError(f"{source}: unsupported {name}={adapter[name]!r} for this U-Net")
    heads = adapter.get("motion_num_attention_heads", 8)
    return dataclasses.replace(
        config, motion_modules=True,
        motion_num_attention_heads=tuple(heads) if isinstance(heads, list) else heads,
        motion_max_seq_length=adapter.get("motion_max_seq_length", 32),
        motion_transformer_layers=adapter.get("motion_transformer_layers_per_block", 1),
        # UNetMotionModel.from_unet2d builds the motion modules with the U-Net's groups
        # (the adapter's motion_norm_num_groups is not used there either).
        motion_norm_num_groups=config.norm_num_groups,
        use_motion_mid_block=adapter.get("use_motion_mid_block", True))

