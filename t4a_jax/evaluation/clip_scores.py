"""The paper's 4D metrics (Table 2): CLIP similarities of a 4D asset's renders on
Animate3D's test rig, against the static object's render and the prompt. No public code
defines them (Animate3D, 4Diffusion, GRID and Diffusion4D ship none); this module is the
one place their definitions live.

    views = test_rig_views(size=256)                  # 3 elevations x 4 azimuths
    frames, reference = rig_renders(posed, static, views)   # uint8 [V, T, S, S, 3], [V, ...]
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

CLIP-C: the paper calls it a "composite score aggregating" the other four, but its values
(0.970-0.984) exceed every other column, so no average of them can give it; the
consecutive-frame similarity (4DGen's CLIP_T in spirit) is what is computed here.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.views import (ORBIT_DISTANCE, ORBIT_FOVY, ViewRenderer, ViewSet,
                                  ring_views)

RIG_ELEVATIONS = (15.0, 0.0, 30.0)
RIG_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
RIG_FRAMES = 16
FRONT_VIEW = RIG_ELEVATIONS.index(0.0) * len(RIG_AZIMUTHS) + RIG_AZIMUTHS.index(0.0)
SCORE_NAMES = ("clip_o_img", "clip_o_text", "clip_f_img", "clip_f_text", "clip_c")


def test_rig_views(size: int, distance: float = ORBIT_DISTANCE,
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
    to_uint8 = lambda x: np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    frames = [to_uint8(renderer(g, views.viewmats, views.Ks).colors) for g in posed]
    reference = to_uint8(renderer(static, views.viewmats, views.Ks).colors)
    return np.stack(frames, axis=1), reference


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
