"""U-Net sizes (`t4a_jax.models.unet_config.UNetConfig.from_config_dict(get_config(...))`).

Variants:
  sd15  (default) Stable Diffusion 1.5 with AnimateDiff v2 motion modules: channels
        (320, 640, 1280, 1280), 2 layers per block, 8 heads, text tokens of 768;
        21 motion modules (2 per down block, 1 mid, 3 per up block), 8 heads, position
        table of 32 frames, GroupNorm(32, eps 1e-6).
  tiny  tests and CI: two levels (32, 64), 1 layer per block, 2 heads, text tokens of
        32, GroupNorm(8), motion modules on.
  mvvdm the full MV-VDM of Animate3D (Stage One): sd15 with MVDream's camera embedding
        and multi-view self-attention, the MV2V (I2V) adapter, the SD1.5 IP-Adapter
        (1024-d CLIP image embedding -> 4 tokens, scale 1.0) and spatio-temporal
        attention in every motion module.
  tiny_mvvdm  tests and CI: mvvdm with the real topology (4 levels, 2 layers per
        block: 16 spatial transformers, 21 motion modules, so every key of the Animate3D
        checkpoints has its parameter) at channels (16, 32, 64, 64) (320/640/1280 ->
        16/32/64), 2 heads, text tokens of 32, image embeddings of 24, GroupNorm(8).
  tiny_all_parts  the `configs/stage1.py:tiny` demo and the pipeline/sampling tests:
        tiny with every MV-VDM part of mvvdm on and image embeddings of 24.
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
    config.use_camera_embedding = False   # MVDream camera MLP 16 -> 1280 -> 1280
    config.multiview_attention = False    # attn1 across the views of each frame
    config.use_i2v = False                # MV2V adapter (to_q_i2v, to_out_i2v)
    config.use_ip_adapter = False         # IP-Adapter image tokens in every attn2
    config.image_embed_dim = 1024         # OpenCLIP ViT-H/14 image embedding
    config.ip_num_tokens = 4
    config.ip_scale = 1.0
    config.spatio_temporal = False        # Animate3D spatio-temporal motion attention
    config.dtype = "float32"              # compute dtype; parameters stay float32
    config.remat = False
    # jax.nn.dot_product_attention implementation: None (JAX picks), 'xla', 'cudnn'.
    config.attention_implementation = ml_collections.config_dict.placeholder(str)

    if arg in ("mvvdm", "tiny_mvvdm", "tiny_all_parts"):
        config.use_camera_embedding = True
        config.multiview_attention = True
        config.use_i2v = True
        config.use_ip_adapter = True
        config.spatio_temporal = True
    if arg == "tiny_mvvdm":
        config.block_out_channels = (16, 32, 64, 64)
        config.num_attention_heads = 2
        config.cross_attention_dim = 32
        config.image_embed_dim = 24
        config.norm_num_groups = 8
        config.motion_num_attention_heads = 2
        config.motion_norm_num_groups = 8
    elif arg in ("tiny", "tiny_all_parts"):
        config.block_out_channels = (32, 64)
        config.down_block_types = ("CrossAttnDownBlock2D", "DownBlock2D")
        config.up_block_types = ("UpBlock2D", "CrossAttnUpBlock2D")
        config.layers_per_block = 1
        config.num_attention_heads = 2
        config.cross_attention_dim = 32
        config.norm_num_groups = 8
        config.motion_num_attention_heads = 2
        config.motion_norm_num_groups = 8
        if arg == "tiny_all_parts":
            config.image_embed_dim = 24
    elif arg not in (None, "", "sd15", "mvvdm"):
        raise ValueError(f"configs/unet.py: unknown variant {arg!r} (known: 'sd15', 'tiny', "
                         f"'mvvdm', 'tiny_mvvdm', 'tiny_all_parts')")
    return config
