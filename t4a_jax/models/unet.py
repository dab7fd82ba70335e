"""The Stage One U-Net in Flax NNX, channels-last: one class that is, as its config
switches parts on, the Stable Diffusion 1.5 U-Net (diffusers `UNet2DConditionModel`),
the AnimateDiff U-Net (`motion_modules`, diffusers `UNetMotionModel`) or the full MV-VDM
of Animate3D (`configs/unet.py:mvvdm`): MVDream camera embedding and multi-view
self-attention, the MV2V (I2V) adapter, IP-Adapter image prompts and spatio-temporal
motion modules (the parts are in `mvdream.py`).

    unet = UNet(UNetConfig.from_config_dict(get_config("mvvdm")), rngs=nnx.Rngs(0))
    eps = unet(sample, timesteps, text_tokens, cameras=cameras, image_embeds=clip_image,
               num_views=4)                                       # [B*V, F, H, W, 4]
    eps, feats = unet(..., capture=("up_blocks.1.motion_modules.2",))
                                                        # feats[name]: [B*V, F, h, w, c]

Shapes: `sample` [N, F, H, W, C_in] with N = B*V object-views (views of one object are
consecutive) and F frames (F = 1 for an image U-Net; frame 0 is the condition when
`use_i2v`); `timesteps` [N]; text tokens [N, L, D], one sequence per object-view,
repeated over frames inside; `cameras` [N, 16] (flattened camera-to-world matrices) and
`image_embeds` [N, image_embed_dim] (CLIP image embeddings, zeros for the unconditional
branch of guidance) where the config has those parts. 2-D layers fold frames into the
batch, `(b v f) h w c`; motion modules attend along F.

Attribute names mirror diffusers (`conv_in`, `time_embedding.linear_1`,
`down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q`,
`up_blocks.1.motion_modules.2.proj_out`, `camera_embedding.linear_1`, `image_proj.proj`,
...), so `tools/convert_weights/unet.py` maps checkpoints mechanically. Stages live in
`unet_blocks.py`, token mixers in `transformer.py`. Training freezes all but the I2V
adapter and the motion modules: `trainable_filter`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from t4a_jax.models.mvdream import CameraEmbedding, ImageProjection
from t4a_jax.models.transformer import Conditioning
from t4a_jax.models.unet_blocks import AttentionFactory, DownBlock, MidBlock, UpBlock
from t4a_jax.sharding import annotate

CROSS_DOWN, PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_UP, PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"
_MOTION_BLOCK_NAMES = {"CrossAttnDownBlockMotion": CROSS_DOWN, "DownBlockMotion": PLAIN_DOWN,
                       "CrossAttnUpBlockMotion": CROSS_UP, "UpBlockMotion": PLAIN_UP}
CAMERA_DIM = 16  # a flattened 4x4 camera-to-world matrix


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

    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any], *, source: str = "config",
                              **overrides) -> "UNetConfig":
        """From the dict of a diffusers `UNet2DConditionModel` or `UNetMotionModel`
        `config.json`. Settings this implementation does not have raise ValueError
        naming them and `source`; `overrides` set UNetConfig fields (e.g. dtype)."""
        class_name = config.get("_class_name", "UNet2DConditionModel")
        if class_name not in ("UNet2DConditionModel", "UNetMotionModel"):
            raise ValueError(f"{source}: _class_name is {class_name!r}, expected "
                             f"'UNet2DConditionModel' or 'UNetMotionModel'")
        motion = class_name == "UNetMotionModel"
        for name, ok in {**_SUPPORTED, **(_SUPPORTED_MOTION if motion else {})}.items():
            if name in config and not ok(config[name]):
                raise ValueError(f"{source}: unsupported {name}={config[name]!r}")
        default = cls()

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
        return cls(**{**fields, **overrides})


def is_trainable(path: Sequence[str | int] | str) -> bool:
    """Whether the parameter at `path` (an NNX path tuple or a dotted name) is trained in
    Stage One: the MV2V adapter (`to_q_i2v`, `to_out_i2v`) and everything in the motion
    modules. The rest (the SD/MVDream U-Net with its multi-view attention, the camera
    MLP, the IP-Adapter) is frozen, as in the paper."""
    parts = path.split(".") if isinstance(path, str) else [str(p) for p in path]
    return bool({"motion_modules", "to_q_i2v", "to_out_i2v"} & set(parts))


# The NNX filter of the trainable parameters, for `nnx.Optimizer(wrt=...)`, `nnx.state`
# or `nnx.split(model, trainable_filter, ...)`.
trainable_filter = nnx.All(nnx.Param, lambda path, _: is_trainable(path))


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


def _per_block(value: int | Sequence[int], levels: int) -> tuple[int, ...]:
    return (value,) * levels if isinstance(value, int) else tuple(value)


def timestep_embedding(timesteps: jax.Array, dim: int, *, flip_sin_to_cos: bool,
                       freq_shift: float, max_period: float = 10000.0) -> jax.Array:
    """diffusers' `get_timestep_embedding`: t [N] -> [N, dim] float32, [sin | cos] (or
    [cos | sin] when flipped) at frequencies max_period^(-i / (dim/2 - freq_shift))."""
    half = dim // 2
    exponent = -jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    return jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)


class Timesteps(nnx.Module):
    """`time_proj`: the parameter-free sinusoidal timestep features, t [N] -> [N, dim]."""

    def __init__(self, dim: int, *, flip_sin_to_cos: bool, freq_shift: float):
        self.dim = dim
        self.flip_sin_to_cos = flip_sin_to_cos
        self.freq_shift = freq_shift

    def __call__(self, timesteps: jax.Array) -> jax.Array:
        return timestep_embedding(timesteps, self.dim, flip_sin_to_cos=self.flip_sin_to_cos,
                                  freq_shift=self.freq_shift)


class TimestepEmbedding(nnx.Module):
    """`time_embedding`: linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_dim: int, dim: int, *, dtype: Any, rngs: nnx.Rngs):
        self.linear_1 = nnx.Linear(in_dim, dim, dtype=dtype, rngs=rngs)
        self.linear_2 = nnx.Linear(dim, dim, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


class UNet(nnx.Module):
    """The noise-prediction U-Net (see the module docstring for the call contract).

    The config alone decides the parts (`unet_blocks.AttentionFactory` picks every
    attention layer from it), so `t4a_jax.models.load` rebuilds any variant from its
    `config.json`."""

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
        self.config = config
        attention = AttentionFactory(config)
        channels = config.block_out_channels
        levels = len(channels)
        dtype = config.dtype
        conv3 = lambda cin, cout: nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)),
                                           dtype=dtype, rngs=rngs)

        self.conv_in = conv3(config.in_channels, channels[0])
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=config.flip_sin_to_cos,
                                   freq_shift=config.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], config.temb_channels, dtype=dtype,
                                                rngs=rngs)
        self.camera_embedding = (CameraEmbedding(CAMERA_DIM, config.temb_channels, dtype=dtype,
                                                 rngs=rngs)
                                 if config.use_camera_embedding else None)
        self.image_proj = (ImageProjection(config.image_embed_dim, config.cross_attention_dim,
                                           config.ip_num_tokens, dtype=dtype, rngs=rngs)
                           if config.use_ip_adapter else None)
        skip_channels = [channels[0]]   # channels of every skip tensor, in push order
        down_blocks = []
        for i, block_type in enumerate(config.down_block_types):
            down_blocks.append(DownBlock(
                config, channels[max(i - 1, 0)], channels[i],
                cross_attention=block_type == CROSS_DOWN, heads=config.heads[i],
                motion_heads=config.motion_heads[i], add_downsample=i < levels - 1,
                attention=attention, rngs=rngs))
            skip_channels += [channels[i]] * (config.layers_per_block + (i < levels - 1))
        self.down_blocks = nnx.List(down_blocks)
        self.mid_block = MidBlock(config, channels[-1], heads=config.heads[-1],
                                  motion_heads=config.motion_heads[-1], attention=attention,
                                  rngs=rngs)
        up_blocks = []
        prev = channels[-1]
        for i, block_type in enumerate(config.up_block_types):
            level = levels - 1 - i
            count = config.layers_per_block + 1
            skips, skip_channels = skip_channels[-count:], skip_channels[:-count]
            up_blocks.append(UpBlock(
                config, prev, reversed(skips), channels[level],
                cross_attention=block_type == CROSS_UP, heads=config.heads[level],
                motion_heads=config.motion_heads[level], add_upsample=i < levels - 1,
                attention=attention, rngs=rngs))
            prev = channels[level]
        self.up_blocks = nnx.List(up_blocks)
        self.conv_norm_out = nnx.GroupNorm(channels[0], num_groups=config.norm_num_groups,
                                           epsilon=config.norm_eps, dtype=dtype, rngs=rngs)
        self.conv_out = conv3(channels[0], config.out_channels)
        annotate(self)

    def feature_names(self) -> tuple[str, ...]:
        """Every name `capture` accepts (diffusers module paths), in order of computation."""
        stages = ([(f"down_blocks.{i}", b) for i, b in enumerate(self.down_blocks)]
                  + [("mid_block", self.mid_block)]
                  + [(f"up_blocks.{i}", b) for i, b in enumerate(self.up_blocks)])
        return ("conv_in",) + tuple(f"{prefix}.{name}" for prefix, stage in stages
                                    for name in stage.feature_names())

    def __call__(self, sample: jax.Array, timesteps: jax.Array,
                 encoder_hidden_states: jax.Array, *, cameras: jax.Array | None = None,
                 image_embeds: jax.Array | None = None, num_views: int = 1,
                 capture: Sequence[str] = (),
                 ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """sample [N, F, H, W, C_in], timesteps [N] (or a scalar), encoder_hidden_states
        [N, L, D], cameras [N, 16] (iff `use_camera_embedding`), image_embeds
        [N, image_embed_dim] (iff `use_ip_adapter`; zeros for the unconditional branch),
        N = B * num_views -> noise prediction [N, F, H, W, C_out] in `sample`'s dtype;
        with `capture`, also {name: output of that layer [N, F, h, w, c]} from the same
        pass."""
        capture = self._check_capture(capture)
        n, f, h, w = self._check_inputs(sample, timesteps, encoder_hidden_states, cameras,
                                        image_embeds, num_views)
        cond = self.conditioning(timesteps, encoder_hidden_states, f, cameras=cameras,
                                 image_embeds=image_embeds, num_views=num_views)
        x = self.conv_in(sample.reshape(n * f, h, w, sample.shape[-1]))
        features = {"conv_in": x} if "conv_in" in capture else {}

        skips = [x]
        for i, block in enumerate(self.down_blocks):
            x, block_skips = self._stage(block, f"down_blocks.{i}", capture, features, x, cond)
            skips += block_skips
        x = self._stage(self.mid_block, "mid_block", capture, features, x, cond)
        for i, block in enumerate(self.up_blocks):
            count = len(block.resnets)
            block_skips, skips = tuple(skips[-count:]), skips[:-count]
            x = self._stage(block, f"up_blocks.{i}", capture, features, x, block_skips, cond)

        x = self.conv_out(jax.nn.silu(self.conv_norm_out(x)))
        out = x.reshape(n, f, h, w, -1).astype(sample.dtype)
        if not capture:
            return out
        return out, {name: v.reshape(n, f, *v.shape[1:]) for name, v in features.items()}

    def conditioning(self, timesteps: jax.Array, encoder_hidden_states: jax.Array,
                     num_frames: int, *, cameras: jax.Array | None = None,
                     image_embeds: jax.Array | None = None, num_views: int = 1,
                     ) -> Conditioning:
        """What every layer sees besides its feature map, for N object-views of
        `num_frames` frames (arguments as in `__call__`): the time embedding [N, T] plus
        the camera embedding (once per object-view), the text tokens and the IP-Adapter
        image tokens, each repeated over the frames of its object-view."""
        dtype = self.config.dtype
        n = encoder_hidden_states.shape[0]
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (n,))
        temb = self.time_embedding(self.time_proj(timesteps).astype(dtype))
        if self.camera_embedding is not None:
            temb = temb + self.camera_embedding(cameras.astype(dtype))
        ip_tokens = None
        if self.image_proj is not None:
            ip_tokens = jnp.repeat(self.image_proj(image_embeds.astype(dtype)), num_frames,
                                   axis=0)
        return Conditioning(temb=jnp.repeat(temb, num_frames, axis=0),
                            context=jnp.repeat(encoder_hidden_states, num_frames, axis=0),
                            num_views=num_views, num_frames=num_frames, ip_tokens=ip_tokens)

    def _stage(self, stage: nnx.Module, prefix: str, capture: frozenset[str],
               features: dict[str, jax.Array], *args: Any) -> Any:
        """Run one stage (under `nnx.remat` when configured), move its captures into
        `features` under their full names and return its other outputs."""
        local = frozenset(name[len(prefix) + 1:] for name in capture
                          if name.startswith(prefix + "."))
        call = lambda stage, *args: stage(*args, capture=local)
        if self.config.remat:
            call = nnx.remat(call)
        *outputs, stage_features = call(stage, *args)
        features.update({f"{prefix}.{name}": v for name, v in stage_features.items()})
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def _check_capture(self, capture: Sequence[str]) -> frozenset[str]:
        if isinstance(capture, str):
            capture = (capture,)
        valid = self.feature_names()
        unknown = sorted(set(capture) - set(valid))
        if unknown:
            raise ValueError(f"UNet: unknown capture names {unknown}; valid names: "
                             f"{', '.join(valid)}")
        return frozenset(capture)

    def _check_inputs(self, sample: jax.Array, timesteps: jax.Array,
                      encoder_hidden_states: jax.Array, cameras: jax.Array | None,
                      image_embeds: jax.Array | None, num_views: int,
                      ) -> tuple[int, int, int, int]:
        config = self.config
        if sample.ndim != 5 or sample.shape[-1] != config.in_channels:
            raise ValueError(f"UNet: sample must be [B*V, F, H, W, {config.in_channels}], got "
                             f"{sample.shape}")
        n, f, h, w, _ = sample.shape
        if h % config.downsample_factor or w % config.downsample_factor:
            raise ValueError(f"UNet: sample H, W = {h}, {w} must be multiples of "
                             f"{config.downsample_factor}")
        if config.motion_modules and f > config.motion_max_seq_length:
            raise ValueError(f"UNet: {f} frames exceed motion_max_seq_length="
                             f"{config.motion_max_seq_length}")
        if jnp.shape(timesteps) not in ((), (n,)):
            raise ValueError(f"UNet: timesteps must be [{n}] or a scalar, got "
                             f"{jnp.shape(timesteps)}")
        if n % num_views:
            raise ValueError(f"UNet: batch {n} is not a multiple of num_views={num_views}")
        expected = (n, config.cross_attention_dim)
        if (encoder_hidden_states.ndim != 3
                or (encoder_hidden_states.shape[0], encoder_hidden_states.shape[2]) != expected):
            raise ValueError(f"UNet: encoder_hidden_states must be [{n}, L, "
                             f"{config.cross_attention_dim}], got {encoder_hidden_states.shape}")
        extras = (("cameras", cameras, "use_camera_embedding", CAMERA_DIM),
                  ("image_embeds", image_embeds, "use_ip_adapter", config.image_embed_dim))
        for name, value, switch, dim in extras:
            if getattr(config, switch) and value is None:
                raise ValueError(f"UNet: the config has {switch}=True, so {name} "
                                 f"[{n}, {dim}] is required")
            if value is not None and not getattr(config, switch):
                raise ValueError(f"UNet: {name} given, but the config has {switch}=False")
            if value is not None and jnp.shape(value) != (n, dim):
                raise ValueError(f"UNet: {name} must be [{n}, {dim}], got {jnp.shape(value)}")
        return n, f, h, w
