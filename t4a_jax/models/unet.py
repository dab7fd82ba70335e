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
...), so `tools/convert_weights/unet.py` maps checkpoints mechanically (and reads
diffusers' `config.json`: `unet_config_from_diffusers`). The config, `UNetConfig`, lives
in `unet_config.py`, stages in `unet_blocks.py`, token mixers in `transformer.py`.
Training freezes all but the I2V adapter and the motion modules: `trainable_filter`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from t4a_jax.models.layers import GroupNorm, Linear
from t4a_jax.models.mvdream import CameraEmbedding, ImageProjection
from t4a_jax.models.transformer import Conditioning
from t4a_jax.models.unet_blocks import AttentionFactory, DownBlock, MidBlock, UpBlock
from t4a_jax.models.unet_config import CROSS_DOWN, CROSS_UP, UNetConfig
from t4a_jax.sharding import annotate

CAMERA_DIM = 16  # a flattened 4x4 camera-to-world matrix


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
        self.linear_1 = Linear(in_dim, dim, dtype=dtype, rngs=rngs)
        self.linear_2 = Linear(dim, dim, dtype=dtype, rngs=rngs)

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
        self.conv_norm_out = GroupNorm(channels[0], num_groups=config.norm_num_groups,
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
