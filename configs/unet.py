"""U-Net sizes (`t4a_jax.models.unet.UNetConfig.from_config_dict(get_config(...))`).

Variants:
  sd15  (default) Stable Diffusion 1.5 with AnimateDiff v2 motion modules: channels
        (320, 640, 1280, 1280), 2 layers per block, 8 heads, text tokens of 768;
        21 motion modules (2 per down block, 1 mid, 3 per up block), 8 heads, position
        table of 32 frames, GroupNorm(32, eps 1e-6).
  tiny  tests and CI: two levels (32, 64), 1 layer per block, 2 heads, text tokens of
        32, GroupNorm(8), motion modules on.
Set `motion_modules=False` for the plain image U-Net, `dtype='bfloat16'` for bf16
compute on accelerators, `remat=True` to rematerialise each stage in training.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.in_channels = 4
    config.out_channels = 4
    config.block_out_channels = (320, 640, 1280, 1280)
    config.down_block_types = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    config.up_block_types = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    config.layers_per_block = 2
    config.num_attention_heads = 8        # heads (head size = channels / 8)
    config.cross_attention_dim = 768      # CLIP ViT-L/14 text tokens
    config.transformer_layers_per_block = 1
    config.use_linear_projection = False  # SD1.5: 1x1 conv proj_in / proj_out
    config.norm_num_groups = 32
    config.norm_eps = 1e-5
    config.flip_sin_to_cos = True
    config.freq_shift = 0
    config.motion_modules = True
    config.motion_num_attention_heads = 8
    config.motion_max_seq_length = 32
    config.motion_transformer_layers = 1
    config.motion_norm_num_groups = 32
    config.motion_norm_eps = 1e-6
    config.use_motion_mid_block = True
    config.dtype = "float32"              # compute dtype; parameters stay float32
    config.remat = False
    # jax.nn.dot_product_attention implementation: None (JAX picks), 'xla', 'cudnn'.
    config.attention_implementation = ml_collections.config_dict.placeholder(str)

    if arg == "tiny":
        config.block_out_channels = (32, 64)
        config.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
        config.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
        config.layers_per_block = 1
        config.num_attention_heads = 2
        config.cross_attention_dim = 32
        config.norm_num_groups = 8
        config.motion_num_attention_heads = 2
        config.motion_norm_num_groups = 8
    elif arg not in (None, "", "sd15"):
        raise ValueError(f"configs/unet.py: unknown variant {arg!r} (known: 'sd15', 'tiny')")
    return config
