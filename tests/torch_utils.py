"""Helpers for the PyTorch side of parity tests (imported only by tests that need torch)."""

from __future__ import annotations

import numpy as np
import torch

# Tiny diffusers configs shared by the U-Net parity and converter CLI tests.
TORCH_UNET = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2,
                  cross_attention_dim=32, norm_num_groups=8)
TORCH_ADAPTER = dict(block_out_channels=(32, 64), motion_layers_per_block=1,
                     motion_num_attention_heads=2, motion_norm_num_groups=8)


def numpy_state_dict(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's state dict as float32 numpy arrays, with aliases removed.

    diffusers registers some submodules under two names (Downsample2D's `conv` is also
    `Conv2d_0`); saved checkpoints keep one name per tensor, and so does this: of the keys
    sharing a tensor, the shortest name wins.
    """
    by_storage: dict[int, str] = {}
    state = module.state_dict()
    for key, value in state.items():
        ptr = value.data_ptr()
        if ptr not in by_storage or len(key) < len(by_storage[ptr]):
            by_storage[ptr] = key
    keep = set(by_storage.values())
    return {k: v.detach().float().numpy() for k, v in state.items() if k in keep}


def randomize_(module: torch.nn.Module, std: float = 0.2, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with N(0, std) so zero-initialised layers are exercised too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * std)
    return module.eval()


def nchw(x: np.ndarray) -> torch.Tensor:
    """[N, H, W, C] numpy -> [N, C, H, W] torch."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)


def nhwc(x: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] torch -> [N, H, W, C] numpy."""
    return x.detach().permute(0, 2, 3, 1).numpy()
