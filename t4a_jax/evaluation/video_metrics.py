"""The multi-view video metrics of the paper's Table 1, as VBench computes them
(Vchitect/VBench at 45e79ec; the PyPI `vbench` 0.1.5 wheel has the same metric code).
Each function takes one video's frames or features; the caller averages over videos.

    temporal_flickering(video)                          # (255 - mean |f_i - f_i+1|) / 255
    i2v_subject(condition_feature, frame_features)     # 0.4 max c + 0.3 mean s + 0.3 min s
    pair_scores = dynamic_pair_scores(RAFTFlow(...), video)  # tools.raft; |flow| top 5 %
    is_dynamic(pair_scores, size=(H, W), num_frames=T)       # VBench's per-video decision
    aesthetic(image_embeds, head_weight, head_bias)     # mean over frames of LAION / 10

Definitions (VBench file and function named):
- temporal flickering (`vbench/temporal_flickering.py`, `cal_score`): the mean over
  consecutive frame pairs of the mean absolute difference of the 0-255 pixel values,
  score (255 - it) / 255. A static video scores 1.
- I2V subject (`vbench2_beta_i2v/i2v_subject.py`): DINO ViT-B/16 CLS features of the
  condition image and of every frame, L2-normalised; c_t = max(0, cos(condition, f_t))
  for every frame t including 0, s_t = max(0, cos(f_{t-1}, f_t)); score 0.4 max_t c_t +
  0.3 mean_t s_t + 0.3 min_t s_t. The DINO inputs (`dino_pixels`): short side resized to
  256 (bicubic, antialiased: PIL, as VBench's condition image; its torchvision tensor
  resize of the frames is a port of the same filter), centre crop 224, /255, ImageNet
  mean / std. Our videos' frame 0 is the condition render, which pins max c_t near 1:
  `skip_first=True` leaves frame 0 out of every term (off by default, as VBench).
- Dynamic degree (`vbench/dynamic_degree.py`): RAFT flow (20 iterations) between
  consecutive frames replicate-padded to a multiple of 8 (`pad_to_multiple_of_8`, RAFT's
  `InputPadder` in its default mode: the padding split between the two sides); per pair
  the mean of the largest 5 % (int(0.05 H' W') values, H' W' the padded size) of the
  flow magnitudes (`flow_top_mean`); a video is dynamic when at least round(4 T / 16)
  pairs exceed 6 min(H, W) / 256 (T frames, H x W unpadded; Python's round), and the
  score over videos is the fraction of dynamic ones. For mp4 input VBench first keeps
  every max(1, round(fps / 8))-th frame (`vbench_frame_step`). `dynamic_score`, the mean
  of the per-pair statistic, is a separate, labelled column: it is what the paper's
  Dy.Sc values above 1 could be, but no public code defines it.
- Aesthetic quality (`vbench/aesthetic_quality.py`): OpenAI CLIP ViT-L/14 image
  embeddings of the frames (`clip_pixels`: resize to 224 by torch's bicubic without
  antialiasing, centre crop, /255, CLIP mean / std), L2-normalised, through the LAION
  linear head (`sa_0_4_vit_l_14_linear.pth`, one Linear(768, 1)), divided by 10; the
  mean over frames.
- Motion smoothness (`vbench/motion_smoothness.py`): keep the even frames 0, 2, 4, ...,
  interpolate the midpoint of each consecutive kept pair with AMT-S (a
  `FrameInterpolator`; AMT's code is CC BY-NC, so `tools/amt.py` runs the installed
  `vbench` package's copy), and compare the midpoints with the real odd frames 1, 3, ...:
  score (255 - mean_i mean |f_{2i+1} - m_i|) / 255 (`motion_smoothness`).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from t4a_jax.models.clip import CLIP_MEAN, CLIP_STD
from t4a_jax.models.dino import IMAGENET_MEAN, IMAGENET_STD

I2V_WEIGHTS = (0.4, 0.3, 0.3)          # max conformity, mean and min consecutive similarity
TOP_FRACTION = 0.05                     # dynamic degree: the largest 5 % of |flow|


def temporal_flickering(video: ArrayLike) -> float:
    """video [T, H, W, C] 0-255 (T >= 2) -> (255 - mean_pairs mean |f_i - f_{i+1}|) / 255."""
    frames = np.asarray(video, np.float64)
    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"temporal_flickering: video {frames.shape}, expected [T>=2, H, W, C]")
    differences = np.abs(frames[1:] - frames[:-1]).mean(axis=(1, 2, 3))
    return float((255.0 - differences.mean()) / 255.0)


def _unit(features: ArrayLike) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def i2v_subject(condition_feature: ArrayLike, frame_features: ArrayLike, *,
                skip_first: bool = False) -> float:
    """condition_feature [D], frame_features [T, D] (DINO CLS features, any norm) -> the
    video's I2V subject score (module docstring); `skip_first` drops frame 0."""
    frames = _unit(frame_features)[1 if skip_first else 0:]
    if frames.ndim != 2 or len(frames) < 2:
        raise ValueError(f"i2v_subject: need >= 2 frame features [T, D], got {frames.shape}")
    conformity = np.maximum(0.0, frames @ _unit(condition_feature))
    consecutive = np.maximum(0.0, np.sum(frames[1:] * frames[:-1], axis=-1))
    w_max, w_mean, w_min = I2V_WEIGHTS
    return float(w_max * conformity.max() + w_mean * consecutive.mean()
                 + w_min * consecutive.min())


def pad_to_multiple_of_8(frames: ArrayLike) -> np.ndarray:
    """frames [..., H, W, C] -> replicate-padded to H', W' multiples of 8, the padding
    split as RAFT's InputPadder does ([pad // 2, pad - pad // 2] per axis)."""
    frames = np.asarray(frames)
    h, w = frames.shape[-3:-1]
    pad_h, pad_w = (-h) % 8, (-w) % 8
    widths = [(0, 0)] * (frames.ndim - 3) + [(pad_h // 2, pad_h - pad_h // 2),
                                             (pad_w // 2, pad_w - pad_w // 2), (0, 0)]
    return np.pad(frames, widths, mode="edge")


def flow_top_mean(flow: ArrayLike) -> float:
    """flow [H', W', 2] (pixels) -> the mean of its int(0.05 H' W') largest magnitudes."""
    flow = np.asarray(flow, np.float64)
    magnitude = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1])).ravel()
    cut = int(magnitude.size * TOP_FRACTION)
    if cut == 0:
        raise ValueError(f"flow_top_mean: a {flow.shape[:2]} flow has no top 5 % (need "
                         f">= 20 pixels)")
    return float(np.sort(magnitude)[::-1][:cut].mean())


def is_dynamic(pair_scores: Sequence[float], *, size: tuple[int, int],
               num_frames: int) -> bool:
    """VBench's decision: at least round(4 T / 16) pairs above 6 min(H, W) / 256."""
    threshold = 6.0 * min(size) / 256.0
    needed = round(4 * (num_frames / 16.0))
    count = 0
    for score in pair_scores:          # VBench checks after each pair (needed 0: any pair)
        count += score > threshold
        if count >= needed:
            return True
    return False


class OpticalFlow(Protocol):
    """An optical flow network (e.g. `tools.raft.RAFTFlow`, RAFT-large as VBench runs
    it): two uint8 frames [H, W, 3], H and W multiples of 8 -> flow [H, W, 2] in pixels
    (x, y) from the first to the second."""

    name: str

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray: ...


def dynamic_pair_scores(flow: OpticalFlow, video: ArrayLike) -> list[float]:
    """video [T, H, W, 3] uint8 -> `flow_top_mean` of each consecutive pair's flow,
    the frames padded by `pad_to_multiple_of_8` first (VBench's `DynamicDegree.infer`;
    `is_dynamic(scores, size=(H, W), num_frames=T)` decides)."""
    frames = pad_to_multiple_of_8(np.asarray(video, np.uint8))
    return [flow_top_mean(flow(a, b)) for a, b in zip(frames[:-1], frames[1:])]


def dynamic_score(pair_scores: Sequence[float]) -> float:
    """The mean of the per-pair statistic (`flow_top_mean`), in pixels."""
    return float(np.mean(pair_scores))


class FrameInterpolator(Protocol):
    """A frame interpolation network (AMT-S as VBench runs it): two uint8 frames
    [H, W, 3] -> the uint8 frame halfway between them [H, W, 3]."""

    name: str

    def __call__(self, frame1: np.ndarray, frame2: np.ndarray) -> np.ndarray: ...


def motion_smoothness(interpolate: FrameInterpolator, video: ArrayLike) -> float:
    """video [T, H, W, 3] uint8 (T >= 3) -> VBench's motion smoothness (module docstring)."""
    frames = np.asarray(video, np.uint8)
    if frames.ndim != 4 or len(frames) < 3:
        raise ValueError(f"motion_smoothness: video {frames.shape}, expected [T>=3, H, W, 3]")
    kept, real = frames[0::2], frames[1::2]
    differences = [np.abs(real[i].astype(np.float64) - np.asarray(interpolate(a, b), np.float64))
                   .mean() for i, (a, b) in enumerate(zip(kept[:-1], kept[1:]))]
    return float((255.0 - np.mean(differences)) / 255.0)


def vbench_frame_step(fps: float) -> int:
    """Dynamic degree on an mp4 keeps every `vbench_frame_step(fps)`-th frame."""
    return max(1, round(fps / 8))


def aesthetic(image_embeds: ArrayLike, head_weight: ArrayLike, head_bias: float) -> float:
    """image_embeds [T, D] (CLIP ViT-L/14), head [D] + bias -> mean_t (unit(e_t) . w + b) / 10."""
    scores = _unit(image_embeds) @ np.asarray(head_weight, np.float64).reshape(-1) + head_bias
    return float(np.mean(scores / 10.0))


def dino_pixels(images: ArrayLike, resize: int = 256, crop: int = 224) -> np.ndarray:
    """images [N, H, W, 3] uint8 -> DINO inputs [N, crop, crop, 3] float32 (module
    docstring: short side to `resize` by PIL bicubic, centre crop, ImageNet mean / std)."""
    out = []
    for image in np.asarray(images, np.uint8):
        size = _short_side_to(image.shape[:2], resize)
        resized = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))
        out.append(_centre_crop(resized, crop))
    pixels = np.stack(out).astype(np.float32) / 255.0
    return (pixels - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)


def clip_pixels(images: ArrayLike, size: int = 224) -> np.ndarray:
    """images [N, H, W, 3] uint8 -> CLIP inputs [N, size, size, 3] float32 as VBench's
    `clip_transform`: short side to `size` by torch's bicubic without antialiasing
    (`bicubic_resize`, rounded back to uint8 as torchvision does), centre crop, /255,
    CLIP mean / std."""
    images = np.asarray(images, np.uint8)
    shape = _short_side_to(images.shape[1:3], size)
    resized = np.clip(np.round(bicubic_resize(images, shape)), 0, 255).astype(np.uint8)
    cropped = np.stack([_centre_crop(image, size) for image in resized])
    pixels = cropped.astype(np.float32) / 255.0
    return (pixels - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)


def bicubic_resize(images: ArrayLike, shape: tuple[int, int]) -> np.ndarray:
    """images [N, H, W, C] -> [N, h, w, C] float64 by torch's `interpolate(mode='bicubic',
    align_corners=False)` without antialiasing: Keys' cubic with a = -0.75 at source
    positions (i + 0.5) H / h - 0.5, edge indices clamped."""
    x = np.asarray(images, np.float64)
    for axis, (old, new) in ((1, (x.shape[1], shape[0])), (2, (x.shape[2], shape[1]))):
        x = np.tensordot(x, _cubic_matrix(old, new), axes=([axis], [1]))
        x = np.moveaxis(x, -1, axis)
    return x


def _cubic_matrix(old: int, new: int, a: float = -0.75) -> np.ndarray:
    """[new, old] interpolation weights of `bicubic_resize` along one axis."""
    source = (np.arange(new) + 0.5) * (old / new) - 0.5
    base = np.floor(source)
    t = source - base
    matrix = np.zeros((new, old))
    for offset in (-1, 0, 1, 2):
        d = np.abs(t - offset)
        weight = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                          np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
        index = np.clip(base + offset, 0, old - 1).astype(int)
        np.add.at(matrix, (np.arange(new), index), weight)
    return matrix


def _short_side_to(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """(H', W') with the short side `size` (torchvision's Resize(size): the long side
    int(size * long / short))."""
    h, w = shape
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's CenterCrop: top = int(round((H - size) / 2)), same for left."""
    h, w = image.shape[:2]
    if h < size or w < size:
        raise ValueError(f"centre crop {size} of a {h} x {w} image")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[top:top + size, left:left + size]
