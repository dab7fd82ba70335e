"""RAFT-large optical flow (Teed & Deng 2020, the `raft-things` weights) for VBench's
dynamic degree, as a `t4a_jax.evaluation.video_metrics.OpticalFlow` (torch, so it
lives in tools/; `import t4a_jax` never imports torch).

    flow = RAFTFlow("raft-things.pth")                # VBench's own RAFT code
    flow = RAFTFlow("raft_large_C_T_V1.pth")          # torchvision's port of it
    field = flow(frame1, frame2)                      # [H, W, 2] pixels

Frames are uint8 [H, W, 3] with H and W multiples of 8 (`video_metrics.
pad_to_multiple_of_8` pads them as VBench does); 20 refinement iterations, the
upsampled last flow, as VBench's `DynamicDegree.infer`. Two implementations, picked by
the checkpoint's key names:

- the original RAFT (`raft-things.pth`, keys `module.fnet...`; VBench's cache file
  `raft_model/models/raft-things.pth`): the copy of the original code that the `vbench`
  package ships (`vbench/third_party/RAFT/core`, BSD-3), loaded as a package of its
  own because importing `vbench` itself needs decord and torchvision. Exactly VBench's
  model. Needs `pip install --no-deps vbench==0.1.5`.
- torchvision's `raft_large` (`Raft_Large_Weights.C_T_V1`, "ported from princeton-vl/
  RAFT", keys `feature_encoder...`): needs torchvision. It takes frames in [-1, 1].

`checkpoint=None` builds VBench's RAFT with random weights (tests).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import types
import warnings

import numpy as np

ITERATIONS = 20
RAFT_PACKAGE = "vbench_raft_core"        # the name VBench's RAFT copy is loaded under
RAFT_WEIGHTS = ("raft-things.pth (https://github.com/princeton-vl/RAFT, "
                "download_models.sh) or torchvision's raft_large_C_T_V1-22a6c225.pth")


class RAFTFlow:
    """RAFT-large as an `OpticalFlow` (module docstring)."""

    def __init__(self, checkpoint: str | None, device: str | None = None,
                 iterations: int = ITERATIONS):
        import torch

        self._torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.iterations = iterations
        state = None
        if checkpoint is not None:
            if not os.path.isfile(checkpoint):
                raise ValueError(f"{checkpoint}: no such RAFT checkpoint (expected "
                                 f"{RAFT_WEIGHTS})")
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            state = {k.removeprefix("module."): v for k, v in state.items()}
        if state is not None and any(k.startswith("feature_encoder.") for k in state):
            self.name = "raft_large (torchvision)"
            self.model = _torchvision_raft()
        else:
            self.name = "raft-things (VBench's RAFT)"
            self.model = vbench_raft()
        if state is not None:
            self.model.load_state_dict(state)
        self.model = self.model.to(self.device).eval()

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray:
        torch = self._torch
        h, w = frame1.shape[:2]
        if h % 8 or w % 8:
            raise ValueError(f"RAFT needs sizes that are multiples of 8, got {h} x {w} "
                             f"(pad_to_multiple_of_8)")
        images = [torch.from_numpy(np.asarray(f, np.float32)).permute(2, 0, 1)[None]
                  .to(self.device) for f in (frame1, frame2)]
        with torch.no_grad(), warnings.catch_warnings():
            # the original code's deprecated autocast / meshgrid calls: not the user's
            warnings.simplefilter("ignore", (FutureWarning, UserWarning))
            if self.name.startswith("raft_large"):
                flow = self.model(*(x / 127.5 - 1.0 for x in images),
                                  num_flow_updates=self.iterations)[-1]
            else:                        # the original maps 0-255 to [-1, 1] itself
                flow = self.model(*images, iters=self.iterations, test_mode=True)[1]
        return flow[0].permute(1, 2, 0).cpu().numpy()


def vbench_raft():
    """VBench's RAFT-large (`RAFT(args)` with VBench's arguments), random weights."""
    return _vbench_raft_core().RAFT(_Args(small=False, mixed_precision=False, alternate_corr=False,
                           dropout=0))


class _Args(dict):
    """RAFT's arguments: attribute access and `in`, as the EasyDict VBench passes."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def _vbench_raft_core() -> types.ModuleType:
    """`vbench/third_party/RAFT/core/raft.py` of the installed vbench, imported as the
    package RAFT_PACKAGE (its relative imports resolve inside it)."""
    if f"{RAFT_PACKAGE}.raft" in sys.modules:
        return sys.modules[f"{RAFT_PACKAGE}.raft"]
    try:
        root = importlib.metadata.distribution("vbench").locate_file(
            "vbench/third_party/RAFT/core")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError("VBench's RAFT needs the vbench package's code: pip install "
                          "--no-deps vbench==0.1.5 (or pass torchvision's raft_large "
                          "weights with torchvision installed)") from None
    spec = importlib.util.spec_from_file_location(
        RAFT_PACKAGE, os.path.join(str(root), "__init__.py"),
        submodule_search_locations=[str(root)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[RAFT_PACKAGE] = package
    spec.loader.exec_module(package)
    return importlib.import_module(f"{RAFT_PACKAGE}.raft")


def _torchvision_raft():
    try:
        from torchvision.models.optical_flow import raft_large
    except ImportError as e:
        raise ImportError(f"these RAFT weights are torchvision's: install torchvision "
                          f"matching torch ({e})") from e
    return raft_large(weights=None, progress=False)
