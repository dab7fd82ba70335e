"""The evaluation's networks, read from one weights folder, with a checksum of each.

    networks = load_networks("weights", need={"dino", "clip", "aesthetic"})
    features = networks.dino_features(frames)        # uint8 [N, H, W, 3] -> [N, 768]
    embeds = networks.clip_image_embeds(frames)       # -> [N, 768] (ViT-L/14)
    text = networks.clip_text_embeds(["a dog is running"])

The folder (`WEIGHT_PARTS`: what goes where, made by which command):

    WEIGHTS/dino/             DINO ViT-B/16, I2V        --kind dino
    WEIGHTS/clip/{vision,text,tokenizer}/   CLIP ViT-L/14, aesthetic + 4D metrics  --kind clip
    WEIGHTS/aesthetic/        the LAION linear head     --kind aesthetic-head
    WEIGHTS/raft-things.pth   RAFT-large (torch, read by the `config.flow` plugin)
    WEIGHTS/amt-s.pth         AMT-S (torch, read by the `config.interpolator` plugin)

The JAX networks are converted checkpoints (`t4a_jax.models.load`); the two torch ones
are files the plugins read (`tools/raft.py`, `tools/amt.py`). A missing part is a
`MissingWeights` error listing every missing file with the command that makes it.
Checksums (`stages.tree_digest`) are the SHA-256 of a part's files (sorted relative
paths and contents), recorded in metrics.json so a table names the exact weights behind it.

Images go in as uint8 frames of any size; each network's preprocessing is VBench's
(`video_metrics.dino_pixels`, `video_metrics.clip_pixels`) at the network's input size.
Calls run in fixed-size batches (the last one padded), one compiled program per network.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpy.typing import ArrayLike

from t4a_jax.evaluation.video_metrics import clip_pixels, dino_pixels
from t4a_jax.models import load
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.stages import tree_digest

CONVERT = "python -m tools.convert_weights"
WEIGHT_PARTS = {
    "dino": ("dino", f"{CONVERT} dino_vitbase16_pretrain.pth WEIGHTS/dino --kind dino"),
    "clip": ("clip", f"{CONVERT} clip-vit-large-patch14 WEIGHTS/clip --kind clip "
                     f"(the openai/clip-vit-large-patch14 folder)"),
    "aesthetic": ("aesthetic", f"{CONVERT} sa_0_4_vit_l_14_linear.pth WEIGHTS/aesthetic "
                               f"--kind aesthetic-head"),
    "raft": ("raft-things.pth", "copy RAFT's raft-things.pth (princeton-vl/RAFT, "
                                "download_models.sh) there"),
    "amt": ("amt-s.pth", "copy AMT-S's amt-s.pth (MCG-NKU/AMT) there"),
}
DINO_RESIZE_RATIO = 256 / 224          # VBench: short side 256, then a 224 crop


class MissingWeights(FileNotFoundError):
    """Weights the evaluation needs are not in the weights folder (the message lists them)."""


def weight_path(folder: str, part: str) -> str:
    return os.path.join(folder, WEIGHT_PARTS[part][0])


def check_weights(folder: str, need: Iterable[str]) -> None:
    """MissingWeights naming every part of `need` absent from `folder`, with its command."""
    missing = [part for part in need if not os.path.exists(weight_path(folder, part))]
    if missing:
        lines = [f"  {weight_path(folder, p)}: {WEIGHT_PARTS[p][1]}" for p in missing]
        raise MissingWeights(f"the evaluation weights folder {folder} lacks:\n"
                             + "\n".join(lines))


def _batched(model: nnx.Module, batch: int) -> Callable[[np.ndarray], np.ndarray]:
    """inputs [N, ...] -> model outputs [N, ...] as numpy, `batch` rows per call."""
    graphdef, state = nnx.split(model)
    apply = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))

    def run(inputs: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(inputs), batch):
            chunk = inputs[start:start + batch]
            pad = batch - len(chunk)
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
            outputs.append(np.asarray(apply(state, jnp.asarray(padded)))[:len(chunk)])
        return np.concatenate(outputs)
    return run


@dataclasses.dataclass
class EvaluationNetworks:
    """The loaded networks (None where not asked for) and `checksums` {part: sha256}."""

    dino: nnx.Module | None = None
    clip_vision: nnx.Module | None = None
    clip_text: nnx.Module | None = None
    tokenizer: CLIPTokenizer | None = None
    aesthetic: nnx.Module | None = None
    checksums: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_size: int = 16

    def __post_init__(self):
        self._runs: dict[str, Callable] = {}

    def _run(self, name: str, inputs: np.ndarray) -> np.ndarray:
        model = getattr(self, name)
        if model is None:
            raise ValueError(f"EvaluationNetworks: {name} was not loaded")
        if name not in self._runs:
            self._runs[name] = _batched(model, self.batch_size)
        return self._runs[name](inputs)

    def dino_features(self, images: ArrayLike) -> np.ndarray:
        """uint8 [N, H, W, 3] -> DINO CLS features [N, D] (VBench's I2V preprocessing)."""
        crop = self.dino.config.image_size
        return self._run("dino", dino_pixels(images, round(crop * DINO_RESIZE_RATIO), crop))

    def clip_image_embeds(self, images: ArrayLike) -> np.ndarray:
        """uint8 [N, H, W, 3] -> CLIP image embeddings [N, P] (not normalised)."""
        return self._run("clip_vision", clip_pixels(images, self.clip_vision.config.image_size))

    def clip_text_embeds(self, prompts: Sequence[str]) -> np.ndarray:
        """N prompts -> CLIP text embeddings [N, P] (not normalised; prompts longer than
        the text tower takes are truncated, as CLIP scores do)."""
        ids = self.tokenizer.tokenize(list(prompts))
        return self._run("clip_text", ids)

    def aesthetic_head(self) -> tuple[np.ndarray, float]:
        """The LAION head's (weight [D], bias)."""
        linear = self.aesthetic.linear
        return np.asarray(linear.kernel[...])[:, 0], float(np.asarray(linear.bias[...])[0])


def load_networks(folder: str, need: Iterable[str], batch_size: int = 16
                  ) -> EvaluationNetworks:
    """The JAX networks of `need` (parts of `WEIGHT_PARTS`: dino, clip, aesthetic) from
    `folder`, checked first (`check_weights`); torch parts are only checksummed."""
    need = list(dict.fromkeys(need))
    check_weights(folder, need)
    networks = EvaluationNetworks(batch_size=batch_size,
                                  checksums={p: tree_digest(weight_path(folder, p)) for p in need})
    if "dino" in need:
        networks.dino = load(weight_path(folder, "dino"))
    if "clip" in need:
        clip = weight_path(folder, "clip")
        networks.clip_vision = load(os.path.join(clip, "vision"))
        networks.clip_text = load(os.path.join(clip, "text"))
        networks.tokenizer = CLIPTokenizer.from_folder(
            os.path.join(clip, "tokenizer"),
            max_length=networks.clip_text.config.max_position_embeddings)
    if "aesthetic" in need:
        networks.aesthetic = load(weight_path(folder, "aesthetic"))
    return networks
