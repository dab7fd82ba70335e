"""The evaluate job: `run(config, workdir)` (`configs/evaluate.py`), the body of
`python -m t4a_jax.evaluate`: every method's outputs scored with the paper's metrics,
written as WORKDIR/metrics.json and WORKDIR/tables.md.

A method is NAME=DIR (`config.methods`, comma-separated). DIR is searched recursively
for
- multi-view videos: clip folders (`reconstruction.clips`: a sampled clip with
  clip.json, or ROOT/videos/<uid>/<anim> of a multi-view set). Each view's video is one
  VBench video; its condition image is the clip's static asset rendered from that view
  over the clip's background (what the model animated). -> Table 1.
- 4D assets: folders with a 4D asset's asset.json (`reconstruction.asset`; a Stage Two
  or animate workdir holds one). Each is rendered on Animate3D's test rig
  (`evaluation.clip_scores`) and scored against its static object and its prompt.
  Other methods' 4D outputs enter as their renders in Animate3D's layout
  (`clip_scores.read_rig_folder`: images/elv_{e}_azi_{a}/{t}.png, reference/, prompt.txt).
  -> Table 2.

Per-item results are cached in WORKDIR/cache/<method>/<item>.json under a fingerprint
of the input files, the weights' checksums and the options, so a rerun (or a killed
run started again) scores only what changed. Weights (`config.weights`, see
`evaluation.networks`) are checked before anything runs: a missing part is an error
naming the file and the command that makes it. The torch metrics run through plugins
named by import path (`config.flow`: RAFT for the dynamic degree, `config.interpolator`:
AMT-S for motion smoothness; the package itself never imports torch); an empty name
leaves that column out, marked "n/a (why)" in the table, never zero.

The tiny variant (`configs/evaluate.py:tiny`) first writes WORKDIR/tiny: random-weight
networks at test sizes, a synthetic multi-view set and one unmoved 4D asset per object,
and scores them as the methods `synthetic` and `unmoved`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from typing import Any, Callable

import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.evaluate.ablations import VARIANTS as ABLATION_VARIANTS
from t4a_jax.evaluate.ablations import asset_videos, run_ablation, slug
from t4a_jax.evaluate.tiny import prepare_tiny
from t4a_jax.evaluation.clip_scores import (FRONT_VIEW, SCORE_NAMES, clip_4d_scores,
                                            is_rig_folder, read_rig_folder, rig_renders,
                                            rig_views)
from t4a_jax.evaluation.networks import (EvaluationNetworks, check_weights, load_networks,
                                         weight_path)
from t4a_jax.evaluation.tables import tables_markdown
from t4a_jax.evaluation.video_scores import score_video, table1_row
from t4a_jax.reconstruction.asset import FORMAT as ASSET_FORMAT
from t4a_jax.reconstruction.asset import INFO_FILE, load_asset4d
from t4a_jax.reconstruction.clips import is_clip, load_clip
from t4a_jax.render.views import ViewRenderer
from t4a_jax.stages import fingerprint, tree_digest
from t4a_jax.video import to_uint8

CACHE_DIR = "cache"
METRICS_FILE = "metrics.json"
TABLES_FILE = "tables.md"
DATASETS = ("", "diffusion4d", "animate3d", "sketchfab28")


@dataclasses.dataclass(frozen=True)
class MethodInputs:
    """One method's items: clip folders and 4D asset folders, found under `folder`."""

    name: str
    folder: str
    clips: tuple[str, ...]
    assets: tuple[str, ...]


def parse_methods(spec: str, allow_empty: bool = False) -> list[tuple[str, str]]:
    """'NAME=DIR,NAME=DIR' -> [(name, absolute dir)]; ValueError naming a bad entry."""
    methods = []
    for entry in (e.strip() for e in (spec or "").split(",")):
        if not entry:
            continue
        name, sep, folder = entry.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ValueError(f"config.methods: {entry!r} is not NAME=DIR")
        folder = os.path.abspath(os.path.expanduser(folder.strip()))
        if not os.path.isdir(folder):
            raise ValueError(f"config.methods: {name.strip()}={folder}: no such folder")
        methods.append((name.strip(), folder))
    if not methods and not allow_empty:
        raise ValueError("config.methods is empty: give NAME=DIR[,NAME=DIR...]")
    names = [n for n, _ in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"config.methods: a method name appears twice in {names}")
    return methods


def _is_asset(folder: str) -> bool:
    path = os.path.join(folder, INFO_FILE)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f).get("format") == ASSET_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def find_inputs(name: str, folder: str) -> MethodInputs:
    """The clips and 4D assets under `folder` (not descending into either)."""
    clips, assets = [], []
    for root, dirs, _ in os.walk(folder):
        dirs.sort()
        if is_clip(root):
            clips.append(root)
            dirs.clear()
        elif _is_asset(root) or is_rig_folder(root):
            assets.append(root)
            dirs.clear()
    if not clips and not assets:
        raise ValueError(f"method {name}: {folder} holds no clip folder (clip.json or "
                         f"ROOT/videos/<uid>/<anim>), no 4D asset ({INFO_FILE}) and no "
                         f"rig renders (images/elv_<e>_azi_<a>/)")
    return MethodInputs(name, folder, tuple(clips), tuple(assets))


def load_plugin(spec: str, weights: str, what: str) -> Any:
    """'module:Class' built with the weights file `weights` (ValueError naming `spec`)."""
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"config.{what}={spec!r}: expected 'module:Class'")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"config.{what}={spec!r} cannot be imported ({e}); set "
                         f"--config.{what}='' to leave its column out") from e
    return cls(weights)


def condition_images(clip) -> np.ndarray:
    """uint8 [V, H, W, 3]: the clip's static asset from each of its cameras, over its
    background: the image each view's video animates."""
    h, w = clip.size
    renderer = ViewRenderer(w, h, background=clip.background)
    return to_uint8(renderer(clip.canonical, clip.viewmats, clip.Ks).colors)


def _item_key(root: str, folder: str) -> str:
    """An item's name: its folder relative to the method's, '/' -> '__'."""
    relative = os.path.relpath(folder, root)
    return "root" if relative == "." else relative.replace(os.sep, "__")


def _cache_name(method: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in method)


class _Cache:
    """WORKDIR/cache/<method>/<item>.json: one item's result under its fingerprint."""

    def __init__(self, workdir: str):
        self.root = os.path.join(workdir, CACHE_DIR)

    def get(self, method: str, key: str, stamp: str, compute: Callable[[], Any]) -> Any:
        path = os.path.join(self.root, method, key + ".json")
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            if record.get("fingerprint") == stamp:
                return record["result"]
        except (OSError, ValueError, KeyError):
            pass
        result = compute()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path) as f:
            f.write(json.dumps({"fingerprint": stamp, "result": result}).encode())
        return result


def score_clip(networks: EvaluationNetworks, folder: str, *, flow, interpolator,
               skip_first: bool, asset: str | None = None) -> dict[str, Any]:
    """{"prompt", "views": [score_video result per view]} of one clip folder's videos,
    or, with `asset` (a 4D asset folder), of that asset rendered at the clip's cameras
    (`ablations.asset_videos`), each against the clip's condition images."""
    clip = load_clip(folder)
    videos = clip.videos if asset is None else asset_videos(clip, asset)
    views = [score_video(networks, video, condition, flow=flow, interpolator=interpolator,
                         skip_first=skip_first)
             for video, condition in zip(videos, condition_images(clip))]
    return {"prompt": clip.prompt, "views": views}


def score_asset(networks: EvaluationNetworks, folder: str, config: ml_collections.ConfigDict
                ) -> dict[str, Any]:
    """The CLIP 4D scores of one 4D asset rendered on the test rig, or of another
    method's rig renders (`clip_scores`)."""
    if is_rig_folder(folder):
        renders, reference, prompt, front = read_rig_folder(folder, config.rig.background)
    else:
        asset = load_asset4d(folder)
        prompt, front = asset.prompt, FRONT_VIEW
        views = rig_views(config.rig.size, config.rig.distance, config.rig.fovy)
        frames = config.rig.frames
        posed = [asset.at(t / (frames - 1)) for t in range(frames)]
        renders, reference = rig_renders(posed, asset.canonical, views,
                                         background=config.rig.background)
    if not prompt:
        raise ValueError(f"{folder}: the asset has no prompt, which CLIP-O/F(text) compare "
                         f"against")
    v, t = renders.shape[:2]
    frame_embeds = networks.clip_image_embeds(renders.reshape((v * t,) + renders.shape[2:]))
    scores = clip_4d_scores(frame_embeds.reshape(v, t, -1),
                            networks.clip_image_embeds(reference),
                            networks.clip_text_embeds([prompt])[0], front)
    return {"prompt": prompt, **scores}


def _check_config(config: ml_collections.ConfigDict) -> None:
    if config.ablations not in ("", *ABLATION_VARIANTS):
        raise ValueError(f"config.ablations={config.ablations!r}, expected '' or one of "
                         f"{sorted(ABLATION_VARIANTS)}")
    if config.dataset not in DATASETS:
        raise ValueError(f"config.dataset={config.dataset!r}, expected one of {DATASETS}")
    if config.rig.frames < 2 or config.rig.size < 16:
        raise ValueError(f"config.rig: frames={config.rig.frames} (>= 2) and size="
                         f"{config.rig.size} (>= 16)")
    if not config.weights:
        raise ValueError("config.weights is required: the folder of the evaluation "
                         "networks (t4a_jax/evaluation/networks.py lists its parts)")


def _needed_parts(methods: list[MethodInputs], config: ml_collections.ConfigDict
                  ) -> list[str]:
    need = []
    if any(m.clips for m in methods) or config.ablations:
        need += ["dino", "clip", "aesthetic"]
        need += ["raft"] if config.flow else []
        need += ["amt"] if config.interpolator else []
    if any(m.assets for m in methods):
        need += ["clip"]
    return list(dict.fromkeys(need))


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Score every method (module docstring); returns the metrics.json dict."""
    if config.tiny:
        config = prepare_tiny(config, workdir)
    _check_config(config)
    methods = [find_inputs(name, folder) for name, folder in
               parse_methods(config.methods, allow_empty=bool(config.ablations))]
    need = _needed_parts(methods, config)
    check_weights(config.weights, need)
    networks = load_networks(config.weights, [p for p in need if p not in ("raft", "amt")],
                             batch_size=config.batch_size)
    checksums = {**networks.checksums, **{p: tree_digest(weight_path(config.weights, p))
                                          for p in need if p in ("raft", "amt")}}
    flow = (load_plugin(config.flow, weight_path(config.weights, "raft"), "flow")
            if config.flow and "raft" in need else None)
    interpolator = (load_plugin(config.interpolator, weight_path(config.weights, "amt"),
                                "interpolator")
                    if config.interpolator and "amt" in need else None)
    options = {"skip_first_frame": config.skip_first_frame, "rig": config.rig.to_dict(),
               "flow": config.flow, "interpolator": config.interpolator}
    cache = _Cache(workdir)
    folders = {m.name: m.folder for m in methods}
    clash = set(folders) & set(ABLATION_VARIANTS.get(config.ablations, {}))
    if clash:
        raise ValueError(f"config.methods: {sorted(clash)} is also the name of an ablation "
                         f"variant")
    # (method, cache folder, kind, paths); an item's key: its folder under the method's
    items = [(m.name, m.name, "clip", (f,)) for m in methods for f in m.clips] + [
        (m.name, m.name, "asset", (f,)) for m in methods for f in m.assets]
    ablation_items = run_ablation(config.ablations, config, workdir) if config.ablations else {}
    items += [(variant, f"ablation_{config.ablations}_{slug(variant)}", item[0], item[1:])
              for variant, entries in ablation_items.items() for item in entries]
    results: dict[str, dict[str, dict]] = {}
    for method, cache_name, kind, paths in tqdm(items, desc="evaluate", unit="item"):
        stamp = fingerprint({"files": [tree_digest(p) for p in paths], "weights": checksums,
                             "options": options, "kind": kind})
        key = (_item_key(folders[method], paths[0]) if method in folders
               else "__".join(paths[0].rstrip(os.sep).split(os.sep)[-2:]))
        if kind == "asset":
            compute = lambda p=paths: score_asset(networks, p[0], config)
        else:
            compute = lambda p=paths: score_clip(
                networks, p[0], flow=flow, interpolator=interpolator,
                skip_first=config.skip_first_frame, asset=p[1] if len(p) > 1 else None)
        entry = results.setdefault(method, {"videos": {}, "assets": {}})
        group = "assets" if kind == "asset" else "videos"
        entry[group][key] = cache.get(_cache_name(cache_name), key, stamp, compute)
        logging.info("evaluate: %s %s %s done", method, kind, key)
    ablations = {variant: results.pop(variant) for variant in ablation_items}
    metrics = _metrics(results, methods, config, checksums, flow, interpolator)
    if ablations:
        metrics["ablations"] = {config.ablations: {
            variant: table1_row([v for clip in r["videos"].values() for v in clip["views"]])
            for variant, r in ablations.items()}}
        metrics["ablation_items"] = ablations
    _write_outputs(workdir, metrics)
    return metrics


def _metrics(results, methods, config, checksums, flow, interpolator) -> dict[str, Any]:
    for method in methods:
        entry = results.setdefault(method.name, {"videos": {}, "assets": {}})
        entry["folder"] = method.folder
        videos = [v for clip in entry["videos"].values() for v in clip["views"]]
        entry["table1"] = table1_row(videos) if videos else None
        assets = list(entry["assets"].values())
        entry["table2"] = ({name: float(np.mean([a[name] for a in assets]))
                            for name in SCORE_NAMES} if assets else None)
    not_computed = {}
    if flow is None:
        why = "RAFT: config.flow unset"
        not_computed.update(dynamic_degree=why, dynamic_score=why)
    if interpolator is None:
        not_computed["motion_smoothness"] = "AMT-S: config.interpolator unset"
    return {
        "dataset": config.dataset, "skip_first_frame": config.skip_first_frame,
        "weights": {"folder": os.path.abspath(config.weights), "sha256": checksums},
        "clip_model": _clip_description(config.weights),
        "flow": getattr(flow, "name", None), "interpolator": getattr(interpolator, "name", None),
        "rig": config.rig.to_dict(), "not_computed": not_computed,
        "methods": results,
    }


def _clip_description(weights: str) -> str:
    path = os.path.join(weight_path(weights, "clip"), "vision", "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            c = json.load(f)["config"]
    except (OSError, ValueError, KeyError):
        return "not used"
    return (f"ViT width {c['hidden_size']}, {c['num_hidden_layers']} layers, patch "
            f"{c['patch_size']}, {c['image_size']} px ({weights}/clip)")


def _write_outputs(workdir: str, metrics: dict[str, Any]) -> None:
    with atomic_write(os.path.join(workdir, METRICS_FILE)) as f:
        f.write(json.dumps(metrics, indent=1).encode())
    with atomic_write(os.path.join(workdir, TABLES_FILE)) as f:
        f.write(tables_markdown(metrics).encode())
