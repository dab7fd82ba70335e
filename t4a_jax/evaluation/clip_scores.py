"""The paper's 4D metrics (Table 2): CLIP similarities of a 4D asset's renders on
Animate3D's test rig, against the static object's render and the prompt. No public code
defines them (Animate3D, 4Diffusion, GRID and Diffusion4D ship none); this module is the
one place their definitions live.

    views = rig_views(size=256)                  # 3 elevations x 4 azimuths
    frames, reference = rig_renders(posed, static, views)   # uint8 [V, T, S, S, 3], [V, ...]
    frames, reference, prompt, front = read_rig_folder(folder)   # another method's renders
    scores = clip_4d_scores(frame_embeds, reference_embeds, text_embed)

The rig (Animate3D's `visualize_testset_frame_16.yaml`): elevations 15, 0 and 30 degrees,
4 azimuths each (0, 90, 180, 270), distance 3.0, vertical field of view 40 degrees,
16 frames at tau = t / 15. Views are ordered elevation-major; the front view is
elevation 0, azimuth 0. Renders are composited over `background` (white by default, as
Animate3D's RGBA renders are usually shown).

With e[v, t] the unit CLIP image embedding of view v at frame t, r[v] that of the static
object from view v, p the unit text embedding of the prompt (all cosines raw, no x100 or
x2.5 as CLIPScore scales them; the paper's text columns, 0.26-0.30, are raw cosines):

    clip_o_img   mean_{v,t} e[v,t] . r[v]     the object from every view, at every time
    clip_o_text  mean_{v,t} e[v,t] . p
    clip_f_img   mean_t e[front,t] . r[front]  the front view's frames
    clip_f_text  mean_t e[front,t] . p
    clip_c       mean_{v, t>=1} e[v,t-1] . e[v,t]   consecutive frames of each view

Another method's renders are read from a folder in Animate3D's layout
(`read_rig_folder`, its test renders `images/elv_{e}_azi_{a}/{t}.png`, RGBA):

    FOLDER/images/elv_{e}_azi_{a}/{t}.png   the asset from elevation e, azimuth a, frame t
    FOLDER/reference/elv_{e}_azi_{a}.png    the static object from the same camera
    FOLDER/prompt.txt                       the prompt

Images with alpha are composited over `background`; views are ordered by the rig's
elevations (15, 0, 30, then any other), then azimuth; the front view is elevation 0
at the smallest azimuth.

CLIP-C: the paper calls it a "composite score aggregating" the other four, but its values
(0.970-0.984) exceed every other column, so no average of them can give it; the
consecutive-frame similarity (4DGen's CLIP_T in spirit) is what is computed here.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.views import (ORBIT_DISTANCE, ORBIT_FOVY, ViewRenderer, ViewSet,
                                  ring_views)
from t4a_jax.video import to_uint8

RIG_ELEVATIONS = (15.0, 0.0, 30.0)
RIG_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
RIG_FRAMES = 16
FRONT_VIEW = RIG_ELEVATIONS.index(0.0) * len(RIG_AZIMUTHS) + RIG_AZIMUTHS.index(0.0)
SCORE_NAMES = ("clip_o_img", "clip_o_text", "clip_f_img", "clip_f_text", "clip_c")


def rig_views(size: int, distance: float = ORBIT_DISTANCE,
                   fovy: float = ORBIT_FOVY) -> ViewSet:
    """The 12 rig views (module docstring), square `size` px, elevation-major."""
    rings = [ring_views(len(RIG_AZIMUTHS), elevation=e, size=size,
                        azimuth_start=RIG_AZIMUTHS[0], distance=distance, fovy=fovy)
             for e in RIG_ELEVATIONS]
    return ViewSet(*(np.concatenate(parts) for parts in zip(*rings)))


def rig_renders(posed: Sequence[Gaussians], static: Gaussians, views: ViewSet, *,
                background: float = 1.0, renderer: ViewRenderer | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """The asset's frames `posed` (T Gaussians, e.g. `Asset4D.at(t / (T - 1))`) and the
    static object, rendered from `views` -> (frames uint8 [V, T, S, S, 3], reference
    uint8 [V, S, S, 3])."""
    size = int(round(views.Ks[0, 1, 2] * 2))
    renderer = renderer or ViewRenderer(size, size, background=background)
    frames = [to_uint8(renderer(g, views.viewmats, views.Ks).colors) for g in posed]
    reference = to_uint8(renderer(static, views.viewmats, views.Ks).colors)
    return np.stack(frames, axis=1), reference


RIG_IMAGES, RIG_REFERENCE, RIG_PROMPT = "images", "reference", "prompt.txt"
_VIEW_FOLDER = re.compile(r"elv_(-?[\d.]+)_azi_(-?[\d.]+)$")


def is_rig_folder(folder: str) -> bool:
    """Whether `folder` holds renders in Animate3D's layout (`read_rig_folder`)."""
    images = os.path.join(folder, RIG_IMAGES)
    return os.path.isdir(images) and any(_VIEW_FOLDER.match(n) for n in os.listdir(images))


def _read_image(path: str, background: float) -> np.ndarray:
    try:
        image = np.asarray(Image.open(path).convert("RGBA"), np.float64) / 255.0
    except OSError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e
    rgb = image[..., :3] * image[..., 3:] + background * (1.0 - image[..., 3:])
    return np.round(rgb * 255).astype(np.uint8)


def read_rig_folder(folder: str, background: float = 1.0
                    ) -> tuple[np.ndarray, np.ndarray, str, int]:
    """A folder of rig renders (module docstring) -> (frames uint8 [V, T, H, W, 3],
    reference uint8 [V, H, W, 3], prompt, front view index); ValueError naming the file
    or folder at fault."""
    images = os.path.join(folder, RIG_IMAGES)
    views = []
    for name in os.listdir(images):
        match = _VIEW_FOLDER.match(name)
        if match:
            elevation, azimuth = float(match[1]), float(match[2])
            rank = (RIG_ELEVATIONS.index(elevation) if elevation in RIG_ELEVATIONS
                    else len(RIG_ELEVATIONS) + elevation)
            views.append((rank, azimuth, elevation, name))
    views.sort()
    frames, reference, counts = [], [], set()
    for _, _, _, name in views:
        files = sorted((f for f in os.listdir(os.path.join(images, name))
                        if re.fullmatch(r"\d+\.png", f)), key=lambda f: int(f[:-4]))
        if [int(f[:-4]) for f in files] != list(range(len(files))) or len(files) < 2:
            raise ValueError(f"{os.path.join(images, name)}: expected frames 0.png, 1.png, "
                             f"... (at least 2, no gaps), got {files[:6]}")
        counts.add(len(files))
        frames.append(np.stack([_read_image(os.path.join(images, name, f), background)
                                for f in files]))
        path = os.path.join(folder, RIG_REFERENCE, name + ".png")
        if not os.path.isfile(path):
            raise ValueError(f"{path}: missing (the static object from the camera of "
                             f"{name}, which CLIP-O/F(img) compare against)")
        reference.append(_read_image(path, background))
    if len(counts) != 1 or len({f.shape[1:] for f in frames + [r[None] for r in reference]}) != 1:
        raise ValueError(f"{images}: views of different lengths or sizes")
    prompt_path = os.path.join(folder, RIG_PROMPT)
    if not os.path.isfile(prompt_path):
        raise ValueError(f"{prompt_path}: missing (the prompt CLIP-O/F(text) compare against)")
    with open(prompt_path, encoding="utf-8") as f:
        prompt = f.read().strip()
    fronts = [i for i, v in enumerate(views) if v[2] == 0.0]
    if not fronts:
        raise ValueError(f"{images}: no elevation-0 view (the front view of CLIP-F)")
    return np.stack(frames), np.stack(reference), prompt, fronts[0]


def _unit(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def clip_4d_scores(frame_embeds: ArrayLike, reference_embeds: ArrayLike,
                   text_embed: ArrayLike, front_view: int = FRONT_VIEW) -> dict[str, float]:
    """frame_embeds [V, T, D], reference_embeds [V, D], text_embed [D] (CLIP embeddings,
    any norm) -> the five scores of the module docstring."""
    e, r, p = _unit(frame_embeds), _unit(reference_embeds), _unit(text_embed)
    if e.ndim != 3 or r.shape != (e.shape[0], e.shape[2]) or p.shape != (e.shape[2],):
        raise ValueError(f"clip_4d_scores: frame embeds {e.shape} [V, T, D], reference "
                         f"{r.shape} [V, D] and text {p.shape} [D] do not match")
    if e.shape[1] < 2 or not 0 <= front_view < e.shape[0]:
        raise ValueError(f"clip_4d_scores: need >= 2 frames and a front view in "
                         f"[0, {e.shape[0]}), got {e.shape[1]} frames, view {front_view}")
    to_reference = np.einsum("vtd,vd->vt", e, r)
    to_text = e @ p
    consecutive = np.sum(e[:, 1:] * e[:, :-1], axis=-1)
    return {"clip_o_img": float(to_reference.mean()), "clip_o_text": float(to_text.mean()),
            "clip_f_img": float(to_reference[front_view].mean()),
            "clip_f_text": float(to_text[front_view].mean()),
            "clip_c": float(consecutive.mean())}
