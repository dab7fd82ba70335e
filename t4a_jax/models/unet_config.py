"""`UNetConfig`, the sizes and switches of the Stage One U-Net (`unet.py`), and the
diffusers block-type names its `down_block_types`/`up_block_types` take.

    config = UNetConfig.from_config_dict(get_config("unet", "tiny_mvvdm"))  # configs/unet.py

The fields, their checks (`__post_init__`: one entry per block, channels divisible by
groups and heads, known block types) and the per-block views (`heads`, `motion_heads`)
live here, apart from the network, so that `unet.py` and `unet_blocks.py` both import
the config without importing each other. Reading a diffusers `config.json` is the
converter's job: `tools.convert_weights.unet.unet_config_from_diffusers`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import ml_collections

CROSS_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Sizes of the U-Net (defaults: SD1.5, no motion modules). Names follow diffusers'
    `config.json` except `num_attention_heads`, the number of heads per block (diffusers'
    SD1.5 configs call it `attention_head_dim`; the head size is channels / heads).

    Motion modules (AnimateDiff v2 layout when `motion_modules`): one after every
    resnet/attention pair (down: `layers_per_block` per block, up: one more, mid: one if
    `use_motion_mid_block`), each GroupNorm(motion_norm_num_groups, motion_norm_eps) ->
    Linear -> `motion_transformer_layers` blocks -> Linear. Frames per call may not exceed
    `motion_max_seq_length` (the position table's length).

    MV-VDM parts (all off by default):
    - `use_camera_embedding`: MVDream's camera MLP `camera_embedding` (16 -> T -> T, T =
      4 * block_out_channels[0]) added to the time embedding, once per object-view.
    - `multiview_attention`: every spatial `attn1` attends across the views of a frame.
    - `use_i2v`: the MV2V adapter (`to_q_i2v`, `to_out_i2v`) in every spatial `attn1`.
    - `use_ip_adapter`: `image_proj` (image_embed_dim -> ip_num_tokens tokens of
      cross_attention_dim) and `to_k_ip`/`to_v_ip` in every spatial `attn2`, weighted by
      `ip_scale`.
    - `spatio_temporal`: Animate3D's `SpatioTemporalAttention` for both attentions of
      every motion module (needs `motion_modules` and channels divisible by 4).

    `dtype` is the compute dtype (parameters stay float32); `remat` rematerialises each
    down/mid/up stage in the backward pass; `attention_implementation` is passed to
    `jax.nn.dot_product_attention` (None: JAX chooses; 'cudnn'; 'xla')."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    down_block_types: tuple[str, ...] = (CROSS_DOWN, CROSS_DOWN, CROSS_DOWN, PLAIN_DOWN)
    up_block_types: tuple[str, ...] = (PLAIN_UP, CROSS_UP, CROSS_UP, CROSS_UP)
    layers_per_block: int = 2
    num_attention_heads: int | tuple[int, ...] = 8
    cross_attention_dim: int = 768
    transformer_layers_per_block: int = 1
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    motion_modules: bool = False
    motion_num_attention_heads: int | tuple[int, ...] = 8
    motion_max_seq_length: int = 32
    motion_transformer_layers: int = 1
    motion_norm_num_groups: int = 32
    motion_norm_eps: float = 1e-6
    use_motion_mid_block: bool = True
    use_camera_embedding: bool = False
    multiview_attention: bool = False
    use_i2v: bool = False
    use_ip_adapter: bool = False
    image_embed_dim: int = 1024
    ip_num_tokens: int = 4
    ip_scale: float = 1.0
    spatio_temporal: bool = False
    dtype: Any = jnp.float32
    remat: bool = False
    attention_implementation: str | None = None

    def __post_init__(self):
        levels = len(self.block_out_channels)
        for name in ("down_block_types", "up_block_types"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"UNetConfig: {name} has {len(getattr(self, name))} entries, "
                                 f"block_out_channels has {levels}")
        per_block = ["num_attention_heads"] + ["motion_num_attention_heads"] * self.motion_modules
        for name in per_block:
            value = getattr(self, name)
            if not isinstance(value, int) and len(value) != levels:
                raise ValueError(f"UNetConfig: {name}={value} needs one entry per block "
                                 f"({levels})")
        if self.spatio_temporal and not self.motion_modules:
            raise ValueError("UNetConfig: spatio_temporal needs motion_modules=True")
        known = {CROSS_DOWN, PLAIN_DOWN}, {CROSS_UP, PLAIN_UP}
        for name, allowed in zip(("down_block_types", "up_block_types"), known):
            unknown = set(getattr(self, name)) - allowed
            if unknown:
                raise ValueError(f"UNetConfig: unknown {name} {sorted(unknown)} "
                                 f"(known: {sorted(allowed)})")
        for i, channels in enumerate(self.block_out_channels):
            divisors = [("norm_num_groups", self.norm_num_groups),
                        ("num_attention_heads", self.heads[i])]
            if self.motion_modules:
                divisors += [("motion_norm_num_groups", self.motion_norm_num_groups),
                             ("motion_num_attention_heads", self.motion_heads[i])]
            for name, divisor in divisors:
                if channels % divisor:
                    raise ValueError(f"UNetConfig: block {i} has {channels} channels, not a "
                                     f"multiple of {name}={divisor}")
            if self.spatio_temporal and channels % 4:
                raise ValueError(f"UNetConfig: block {i} has {channels} channels; "
                                 f"spatio_temporal's 2-D sine encoding needs a multiple of 4")

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention heads of each down block (up block i uses `heads[-1 - i]`)."""
        return _per_block(self.num_attention_heads, len(self.block_out_channels))

    @property
    def motion_heads(self) -> tuple[int, ...]:
        return _per_block(self.motion_num_attention_heads, len(self.block_out_channels))

    @property
    def temb_channels(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_config_dict(cls, config: ml_collections.ConfigDict | Mapping[str, Any],
                         ) -> "UNetConfig":
        """From `configs/unet.py` (lists become tuples, `dtype` may be a name such as
        'bfloat16'). Unknown fields raise ValueError naming them."""
        values = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"UNetConfig: unknown fields {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        if isinstance(values.get("dtype"), str):
            values["dtype"] = jnp.dtype(values["dtype"]).type
        return cls(**values)


def _per_block(value: int | Sequence[int], levels: int) -> tuple[int, ...]:
    return (value,) * levels if isinstance(value, int) else tuple(value)
