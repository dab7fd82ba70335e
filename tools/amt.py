"""AMT-S frame interpolation (Li et al. 2023) for VBench's motion smoothness, as a
`t4a_jax.evaluation.video_metrics.FrameInterpolator` (torch, so it lives in tools/).

    interpolate = AMTInterpolator("amt-s.pth")        # VBench's cache file amt_model/amt-s.pth
    middle = interpolate(frame1, frame2)               # uint8 [H, W, 3]

AMT's code is CC BY-NC 4.0, so it is never copied here: the network is the `vbench`
package's copy (`vbench/third_party/amt/networks/AMT-S.py`, built with the parameters of
its `cfgs/AMT-S.yaml`), imported without running `vbench/__init__.py` (which needs
decord and torchvision): the `vbench` package is registered by its folder only. Needs
`pip install --no-deps vbench==0.1.5` and PyYAML.

As VBench's `MotionSmoothness.motion_score` on a CPU (scale factor 1): frames to
[0, 1] tensors, replicate-padded to multiples of 16 (the padding split between the
two sides), the midpoint at embt = 0.5 with `eval=True`, unpadded, back to uint8 by
clipping and truncating (`tensor2img`). Frames must be at least 128 px
(`MIN_SIZE`). `checkpoint=None` builds random weights (tests).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
import warnings

import numpy as np

AMT_WEIGHTS = "amt-s.pth (https://huggingface.co/lalala125/AMT, VBench's amt_model/amt-s.pth)"
DIVISOR = 16
MIN_SIZE = 128       # its 4-level correlation pyramid at 1/8 scale needs 2 x 2 at the top


def _vbench_folder() -> str:
    if "vbench" in sys.modules:
        return list(sys.modules["vbench"].__path__)[0]
    spec = importlib.util.find_spec("vbench")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("AMT-S needs the vbench package's code: pip install --no-deps "
                          "vbench==0.1.5")
    return list(spec.submodule_search_locations)[0]


def vbench_amt_s():
    """VBench's AMT-S `Model` with the parameters of its AMT-S.yaml, random weights."""
    import yaml

    folder = _vbench_folder()
    if "vbench" not in sys.modules:          # the package by its folder, __init__ not run
        package = types.ModuleType("vbench")
        package.__path__ = [folder]
        sys.modules["vbench"] = package
    with open(os.path.join(folder, "third_party", "amt", "cfgs", "AMT-S.yaml")) as f:
        network = yaml.safe_load(f)["network"]
    module = importlib.import_module("vbench.third_party.amt." + network["name"].rsplit(".", 1)[0])
    return getattr(module, network["name"].rsplit(".", 1)[1])(**network["params"])


class AMTInterpolator:
    """AMT-S as a `FrameInterpolator` (module docstring)."""

    def __init__(self, checkpoint: str | None, device: str | None = None):
        import torch

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.name = "AMT-S (VBench's AMT)"
        if checkpoint is not None and not os.path.isfile(checkpoint):
            raise ValueError(f"{checkpoint}: no such AMT-S checkpoint (expected {AMT_WEIGHTS})")
        self.model = vbench_amt_s()
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            self.model.load_state_dict(state["state_dict"] if "state_dict" in state else state)
        self.model = self.model.to(self.device).eval()
        self._embt = torch.full((1, 1, 1, 1), 0.5, device=self.device)

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        torch = self._torch
        h, w = frame1.shape[:2]
        pad_h, pad_w = (-h) % DIVISOR, (-w) % DIVISOR
        if min(h + pad_h, w + pad_w) < MIN_SIZE:
            raise ValueError(f"{self.name} needs frames of at least {MIN_SIZE} px (padded to "
                             f"multiples of {DIVISOR}), got {h} x {w}")
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        images = [torch.nn.functional.pad(
            torch.from_numpy(np.asarray(f, np.uint8)[..., :3].copy()).permute(2, 0, 1)[None]
            .to(self.device, torch.float32) / 255.0, pads, mode="replicate")
            for f in (frame1, frame2)]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, UserWarning))
            middle = self.model(*images, self._embt, scale_factor=1.0, eval=True)["imgt_pred"]
        middle = middle[..., pads[2]:pads[2] + h, pads[0]:pads[0] + w]
        if not bool(torch.isfinite(middle).all()):
            raise ValueError(f"{self.name} gave non-finite pixels for {h} x {w} frames")
        return (middle * 255.0)[0].permute(1, 2, 0).cpu().numpy().clip(0, 255).astype(np.uint8)
