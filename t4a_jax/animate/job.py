"""The animate job: `run(config, workdir)` (`configs/animate.py`), a static 3D model and
a prompt in, an animated 3D asset out. Stages (`t4a_jax.stages`: each in its folder,
skipped when finished with the same inputs, resumed when killed):

    stage_one    (only without config.models) the tiny Stage One model trained on a
                 generated synthetic set (`training.loop.train`; its VAE fitted first):
                 stage_one/models
    asset        the asset loaded (`render.assets.load_asset`) and normalised onto the
                 camera orbit (`normalise`): asset/static.ply, asset/normalisation.json
    condition    its V condition renders on the Animate3D orbit (`sampling`):
                 condition/condition.npz (views and renders), condition/view_<k>.png
    sample       the multi-view video of the Stage One model (DDIM + CFG, seeded):
                 sample/clip/ (the clip folder Stage Two reads), sample/multiview.mp4
    reconstruct  Stage Two with its priors (`reconstruction.job.run`, checkpointed, so
                 a killed run resumes): reconstruct/{asset,frames,...}
    export       export/: frames/frame_{f:03d}.ply, asset/ (the field, renders at any
                 time), animated.glb (mesh inputs), multiview / turntable / compare
                 (.mp4, .gif), viewer.html (tracks by the U-Net's features;
                 `tools.viewer_tracks` remakes it with CoTracker3's), viewer.json,
                 likeness.json (`likeness`)

Several objects (`config.jobs`, a file of ASSET<TAB>PROMPT lines): each gets its own
asset, condition and export stages in WORKDIR/<name>/ (name: the asset file's stem),
the sample stage samples them in one batch (clip folders sample/<name>/<name>) and the
reconstruct stage fits them in one sharded Stage Two program (reconstruct/<name>).

Each stage's inputs are the config values it reads and the stages before it, so a
changed prompt reruns sample, reconstruct and export only, a changed asset file all
but stage_one. WORKDIR/run.json has every stage's status and time. Everything that can
be wrong with the input (the asset file, its type, an empty mesh, the prompt, the
models folder) raises ValueError before any stage runs and before anything is written.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
from typing import Any, Sequence

import ml_collections
import numpy as np
from absl import logging
from PIL import Image

from t4a_jax.atomic import atomic_write
from t4a_jax.data import procedural
from t4a_jax.export import write_animated_glb, write_viewer
from t4a_jax.export.viewer import Tracks
from t4a_jax.export.tracks import feature_tracks
from t4a_jax.models import ModelBundle, load_bundle
from t4a_jax.reconstruction import job as stage_two
from t4a_jax.reconstruction.asset import Asset4D, load_asset4d
from t4a_jax.reconstruction.clips import Clip, load_clip, write_clip
from t4a_jax.image_metrics import mask_iou, psnr
from t4a_jax.reconstruction.outputs import (orbit_of, render_views, turntable_frames,
                                            write_videos)
from t4a_jax.render.cameras import viewmat_to_c2w
from t4a_jax.render.assets import Normalisation, is_mesh, load_asset, normalise
from t4a_jax.render.gaussians import Gaussians, rgb_from_sh_dc
from t4a_jax.render.mesh import load_meshes
from t4a_jax.render.ply import load_ply, save_ply
from t4a_jax.render.views import ViewRender, ViewRenderer, ViewSet
from t4a_jax.sampling import render_conditions, resolve, sample_videos, tile_views
from t4a_jax.stages import Done, Stages, file_digest
from t4a_jax.training.loop import train
from t4a_jax.video import read_video, to_uint8

STAGES = ("stage_one", "asset", "condition", "sample", "reconstruct", "export")
GLTF_SUFFIXES = (".glb", ".gltf")
# Config keys that say when to stop, not what to compute: left out of a stage's inputs
# so that a run split by them resumes instead of starting again.
UNFINGERPRINTED = ("stop_after",)
# The export's record of what its viewer was made from (the clip folder relative to the
# export folder, prompt, title, JPEG quality, track grid): `tools.viewer_tracks` reads
# it to remake the viewer with other tracks.
VIEWER_INPUTS = "viewer.json"
TINY_CREATURE_GAUSSIANS = 4096   # the tiny variant's creature (its exports render at 256 px)


class StageInterrupted(RuntimeError):
    """A stage stopped before its end (SIGTERM or `stop_after`); rerun to resume it."""


def _inputs_of(config: ml_collections.ConfigDict) -> dict:
    return {k: v for k, v in config.to_dict().items() if k not in UNFINGERPRINTED}


def _train_stage_one(config: ml_collections.ConfigDict, folder: str) -> None:
    out = train(config, folder)
    if out["stopped"] != "done":
        raise StageInterrupted(f"stage_one stopped ({out['stopped']}) at step {out['step']}; "
                               f"rerun to resume it")


def _reconstruct(config: ml_collections.ConfigDict, folder: str) -> None:
    out = stage_two.run(config, folder)
    if out["stopped"] != "done":
        raise StageInterrupted(f"reconstruct stopped ({out['stopped']}) at iteration "
                               f"{out['step']}; rerun to resume it")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The checked inputs: the asset file, its Gaussians (loaded, not yet normalised),
    whether it is a mesh, the prompt and its file's up axis."""

    asset: str
    gaussians: Gaussians
    mesh: bool
    prompt: str
    up: str


# ----------------------------------------------------------------------------- inputs


def tiny_creature(config: ml_collections.ConfigDict) -> tuple[Gaussians, str]:
    """The tiny variant's held-out creature (`procedural.make_creature` at
    `tiny_creature_seed`, not a seed of the synthetic training sets) and its prompt."""
    seed = config.tiny_creature_seed
    creature = procedural.make_creature(seed, TINY_CREATURE_GAUSSIANS)
    animation = procedural.make_animation(creature, seed + 1)
    return creature.gaussians, "a creature " + " and ".join(animation.actions[:2])


def check_inputs(config: ml_collections.ConfigDict, workdir: str) -> Inputs:
    """Load and check the asset and the prompt (ValueError naming what is wrong); the
    tiny variant's creature is written to WORKDIR/inputs/creature_<seed>_<count>.ply
    first."""
    asset, prompt = config.asset, config.prompt
    if not asset and config.tiny_creature_seed is not None:
        gaussians, tiny_prompt = tiny_creature(config)
        asset = os.path.join(workdir, "inputs", f"creature_{config.tiny_creature_seed}_"
                                                f"{TINY_CREATURE_GAUSSIANS}.ply")
        if not os.path.isfile(asset):
            os.makedirs(os.path.dirname(asset), exist_ok=True)
            save_ply(asset, gaussians)
        prompt = prompt or tiny_prompt
    if not asset:
        raise ValueError("config.asset is required (a 3DGS .ply or a mesh: .obj, .glb, "
                         ".gltf, .ply with faces)")
    if not prompt or not prompt.strip():
        raise ValueError("config.prompt is required (what the object does)")
    asset = os.path.abspath(asset)
    up = config.up
    if up == "auto":
        up = "y" if asset.lower().endswith(GLTF_SUFFIXES) else "z"
    if up not in ("y", "z"):
        raise ValueError(f"config.up={config.up!r}, expected 'auto', 'y' or 'z'")
    try:
        gaussians = load_asset(asset, mesh_samples=config.mesh_samples, seed=config.asset_seed)
    except ValueError as e:
        raise ValueError(f"config.asset: {e}") from None
    return Inputs(asset, gaussians, is_mesh(asset), prompt.strip(), up)


def check_prompt(bundle: ModelBundle, prompt: str) -> None:
    """ValueError when the prompt has more tokens than the text encoder takes."""
    if bundle.tokenizer is None:
        return
    room = bundle.tokenizer.max_length - 2
    count = bundle.prompt_tokens(prompt)
    if count > room:
        raise ValueError(f"config.prompt has {count} tokens; the text encoder takes {room} "
                         f"(beyond that the prompt would be cut): {prompt!r}")


def models_fingerprint(path: str) -> dict[str, list]:
    """{relative path: [size, mtime]} of every file of the models folder: a change of
    the weights reruns what used them, without hashing gigabytes."""
    files = {}
    for root, _, names in os.walk(path):
        for name in sorted(names):
            full = os.path.join(root, name)
            stat = os.stat(full)
            files[os.path.relpath(full, path)] = [stat.st_size, int(stat.st_mtime)]
    return files


# ----------------------------------------------------------------------------- stages


def _write_json(path: str, value: Any) -> None:
    with atomic_write(path) as file:
        file.write(json.dumps(value, indent=1).encode())


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def make_asset(inputs: Inputs, config: ml_collections.ConfigDict, folder: str) -> None:
    gaussians, frame = normalise(inputs.gaussians, radius=config.radius, up=inputs.up)
    save_ply(os.path.join(folder, "static.ply"), gaussians)
    _write_json(os.path.join(folder, "normalisation.json"),
                {"centre": frame.centre, "scale": frame.scale, "up": frame.up,
                 "source": inputs.asset, "mesh": inputs.mesh,
                 "num_gaussians": gaussians.num_gaussians})


def make_condition(asset: Done, settings: ml_collections.ConfigDict, folder: str) -> None:
    gaussians = load_ply(os.path.join(asset.folder, "static.ply"))
    views, render = render_conditions(gaussians, settings)
    np.savez(os.path.join(folder, "condition.npz"), **views._asdict(),
             **{f"render_{k}": v for k, v in render._asdict().items()})
    for k, image in enumerate(render.colors):
        Image.fromarray(to_uint8(image)).save(
            os.path.join(folder, f"view_{k}.png"))


def read_condition(folder: str) -> tuple[ViewSet, ViewRender]:
    with np.load(os.path.join(folder, "condition.npz")) as data:
        views = ViewSet(*(data[k] for k in ViewSet._fields))
        render = ViewRender(*(data[f"render_{k}"] for k in ViewRender._fields))
    return views, render


def make_samples(bundle: ModelBundle, objects: Sequence["Object"], assets: Sequence[Done],
                 conditions: Sequence[Done], settings: ml_collections.ConfigDict,
                 folder: str) -> None:
    """The objects' multi-view videos, sampled in one batch: per object a clip folder
    (`clip_folder`) and its views side by side (multiview.mp4/.gif beside it)."""
    loaded = [read_condition(done.folder) for done in conditions]
    videos = sample_videos(bundle, [(views, render, o.inputs.prompt)
                                    for o, (views, render) in zip(objects, loaded)],
                           settings)
    for o, asset, (views, render), video in zip(objects, assets, loaded, videos):
        clip = clip_folder(folder, o)
        os.makedirs(os.path.dirname(clip), exist_ok=True)
        write_videos(os.path.join(os.path.dirname(clip), "multiview"), tile_views(video),
                     settings.fps)
        write_clip(clip, video, views, render.alphas,
                   load_ply(os.path.join(asset.folder, "static.ply")),
                   prompt=o.inputs.prompt, fps=settings.fps, elevation=settings.elevation,
                   azimuth_start=settings.azimuth)


def stage_two_config(config: ml_collections.ConfigDict, clips: Sequence[str], models: str
                     ) -> ml_collections.ConfigDict:
    """`config.stage2` with the job's clips (one: `clip`, several: `clips`, fitted as one
    sharded program) and Stage One model."""
    s2 = ml_collections.ConfigDict(config.stage2.to_dict())
    s2.clip, s2.clips = (clips[0], None) if len(clips) == 1 else (None, ",".join(clips))
    s2.static = None
    s2.synthetic.enabled = False
    s2.stage_one = models
    return s2


def mesh_export(inputs: Inputs, asset_folder: str, asset: Asset4D, folder: str,
                fps: float) -> str:
    """animated.glb: the input mesh (its own coordinates) with one morph target per
    frame, each vertex moved as the 4D asset moves the Gaussian at that vertex (the
    mesh's vertices are the first Gaussians, `render.mesh.gaussians_from_mesh`)."""
    meshes = load_meshes(inputs.asset)
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes])
    vertices = np.concatenate([np.asarray(m.vertices) for m in meshes])
    faces = np.concatenate([np.asarray(m.faces) + o for m, o in zip(meshes, offsets)])
    info = _read_json(os.path.join(asset_folder, "normalisation.json"))
    frame = Normalisation(tuple(info["centre"]), info["scale"], info["up"])
    count = len(vertices)
    frames = np.stack([frame.invert(np.asarray(asset.at_frame(f).means)[:count])
                       for f in range(asset.num_frames)])
    colors = np.clip(np.asarray(rgb_from_sh_dc(asset.canonical.sh[:count])), 0, 1)
    path = os.path.join(folder, "animated.glb")
    write_animated_glb(path, vertices, faces, frames, fps=fps, colors=colors,
                       name=os.path.splitext(os.path.basename(inputs.asset))[0])
    return path


def likeness(clip: Clip, condition: Done, asset4d: Asset4D) -> dict[str, Any]:
    """How much the results look like the input: the PSNR (dB) of the video's decoded
    condition frames against the condition renders, and the silhouette IoU (alpha >
    0.5) of the 4D asset at each frame, in the condition views, against the condition
    renders' (the object keeps its shape while it moves)."""
    _, render = read_condition(condition.folder)
    decoded = clip.videos[:, 0].astype(np.float32) / 255.0
    renderer = ViewRenderer(clip.size[1], clip.size[0], background=clip.background)
    _, alphas = render_views(asset4d, clip, renderer)                      # [V, F, H, W]
    target = np.asarray(render.alphas) > 0.5
    ious = [float(np.mean(mask_iou(alphas[:, f] > 0.5, target)))
            for f in range(clip.num_frames)]
    return {"condition_psnr": float(np.mean(psnr(decoded, np.asarray(render.colors)))),
            "silhouette_iou": ious, "silhouette_iou_mean": float(np.mean(ious))}


def write_object_viewer(folder: str, asset4d: Asset4D, clip: Clip, tracks: Tracks, *,
                        prompt: str, title: str, jpeg_quality: int) -> str:
    """FOLDER/viewer.html (`export.viewer`) of the 4D asset beside its clip's videos with
    `tracks` over them, starting at the clip's camera orbit; returns its path."""
    elevation, azimuth, distance = orbit_of(clip)
    fovy = float(np.degrees(2 * np.arctan(clip.size[0] / (2 * clip.Ks[0, 1, 1]))))
    path = os.path.join(folder, "viewer.html")
    size = write_viewer(path, [asset4d.at_frame(f) for f in range(asset4d.num_frames)],
                        fps=clip.fps, videos=clip.videos, tracks=tracks, prompt=prompt,
                        title=title, camera={"elevation": elevation, "azimuth": azimuth,
                                             "distance": distance, "fovy": fovy},
                        jpeg_quality=jpeg_quality)
    logging.info("wrote %s (%.1f MB, tracks by %s)", path, size / 1e6, tracks.tracker)
    return path


def _cotracker_installed() -> bool:
    try:
        return importlib.util.find_spec("cotracker") is not None
    except (ImportError, ValueError):          # a module without a spec (a test's stand-in)
        return False


def make_export(config: ml_collections.ConfigDict, inputs: Inputs, bundle: ModelBundle,
                asset: Done, condition: Done, clip_dir: str, fitted: str,
                folder: str) -> None:
    """The object's exports (module docstring) from its clip folder `clip_dir` and its
    Stage Two output folder `fitted`; likeness.json (`likeness`)."""
    e = config.export
    for name in ("frames", "asset"):
        shutil.copytree(os.path.join(fitted, name), os.path.join(folder, name))
    asset4d = load_asset4d(os.path.join(fitted, "asset"))
    if inputs.mesh:
        mesh_export(inputs, asset.folder, asset4d, folder, config.sample.fps)
    clip = load_clip(clip_dir)
    video = clip.videos                                              # [V, F, S, S, 3] uint8
    write_videos(os.path.join(folder, "multiview"), tile_views(video), clip.fps)
    compare = read_video(os.path.join(fitted, "views.mp4"))
    write_videos(os.path.join(folder, "compare"), compare, clip.fps)
    renderer = ViewRenderer(e.video_size, e.video_size, background=clip.background)
    write_videos(os.path.join(folder, "turntable"),
                 turntable_frames(asset4d, clip, renderer, e.turntable_frames), clip.fps)
    tracks = feature_tracks(bundle, video / 255.0, clip.masks[:, 0], inputs.prompt,
                            views_c2w=np.asarray(viewmat_to_c2w(clip.viewmats)),
                            tap=e.feature_tap, grid=e.track_grid)
    title = os.path.basename(inputs.asset)
    write_object_viewer(folder, asset4d, clip, tracks, prompt=inputs.prompt, title=title,
                        jpeg_quality=e.jpeg_quality)
    _write_json(os.path.join(folder, VIEWER_INPUTS), {
        "clip": os.path.relpath(clip_dir, folder), "prompt": inputs.prompt, "title": title,
        "jpeg_quality": e.jpeg_quality, "track_grid": e.track_grid})
    if _cotracker_installed():
        logging.warning("CoTracker3 is installed: `python -m tools.viewer_tracks --workdir="
                        "WORKDIR --checkpoint=scaled_offline.pth` puts its tracks in %s",
                        os.path.join(folder, "viewer.html"))
    figures = likeness(clip, condition, asset4d)
    _write_json(os.path.join(folder, "likeness.json"), figures)
    logging.info("likeness: condition frames %.1f dB, silhouette IoU %.3f (mean over "
                 "frames)", figures["condition_psnr"], figures["silhouette_iou_mean"])


@dataclasses.dataclass(frozen=True)
class Object:
    """One object of the job: `name` ('' for a single object, whose stages sit directly
    in WORKDIR; else its stages are WORKDIR/<name>/<stage>) and its checked inputs."""

    name: str
    inputs: Inputs

    def stage(self, stage: str) -> str:
        return f"{self.name}/{stage}" if self.name else stage


def clip_folder(sample_folder: str, o: Object) -> str:
    """Where the sample stage writes the object's clip (its folder name is the clip's
    name, which names the object's Stage Two outputs)."""
    return os.path.join(sample_folder, o.name, o.name) if o.name else os.path.join(
        sample_folder, "clip")


def read_jobs(path: str) -> list[tuple[str, str]]:
    """(asset, prompt) per line `ASSET<TAB>PROMPT` of the jobs file (blank lines and
    lines starting with '#' skipped; relative assets are relative to the file)."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as e:
        raise ValueError(f"config.jobs={path}: {e.strerror}") from None
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{number}: expected ASSET<TAB>PROMPT, got {line!r}")
        asset, prompt = (part.strip() for part in line.split("\t", 1))
        jobs.append((os.path.join(os.path.dirname(os.path.abspath(path)), asset), prompt))
    if not jobs:
        raise ValueError(f"config.jobs={path}: no ASSET<TAB>PROMPT lines")
    return jobs


def job_objects(config: ml_collections.ConfigDict, workdir: str) -> list[Object]:
    """The checked objects of the job: `asset` + `prompt`, or every line of `jobs`
    (named by the asset file's stem, made unique with a suffix)."""
    if not config.jobs:
        return [Object("", check_inputs(config, workdir))]
    if config.asset:
        raise ValueError("set one of config.asset and config.jobs, not both")
    objects, names = [], set()
    for asset, prompt in read_jobs(config.jobs):
        one = ml_collections.ConfigDict(config.to_dict())
        one.update(asset=asset, prompt=prompt, tiny_creature_seed=None)
        stem = os.path.splitext(os.path.basename(asset))[0]
        name, k = stem, 1
        while name in names or name in STAGES:
            name, k = f"{stem}_{k}", k + 1
        names.add(name)
        objects.append(Object(name, check_inputs(one, workdir)))
    return objects


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """The job (module docstring); returns {"export": the (first) object's export
    folder, "exports": every object's, "stages": run.json, "metrics": Stage Two's
    metrics of each object}."""
    workdir = os.path.abspath(workdir)
    redo = {name.strip() for name in config.redo.split(",") if name.strip()}
    unknown = sorted(redo - set(STAGES))
    if unknown:
        raise ValueError(f"config.redo: unknown stage(s) {', '.join(unknown)}; the stages "
                         f"are {', '.join(STAGES)}")
    bundle = None
    if config.models:
        bundle = load_bundle(config.models)
    elif config.stage_one is None:
        raise ValueError("config.models (a Stage One model bundle) is required")
    objects = job_objects(config, workdir)
    if bundle is not None:
        for o in objects:
            check_prompt(bundle, o.inputs.prompt)
    names = ([] if bundle is not None else ["stage_one"]) + [
        o.stage(s) for o in objects for s in ("asset", "condition")] + [
        "sample", "reconstruct"] + [o.stage("export") for o in objects]
    stages = Stages(workdir, names, redo=[n for n in names if n.split("/")[-1] in redo])
    try:
        if bundle is None:
            trained = stages.run("stage_one", _inputs_of(config.stage_one),
                                 lambda folder: _train_stage_one(config.stage_one, folder))
            models = os.path.join(trained.folder, "models")
            bundle = load_bundle(models)
            for o in objects:
                check_prompt(bundle, o.inputs.prompt)
            models_key: Any = trained
        else:
            models, models_key = os.path.abspath(config.models), models_fingerprint(
                config.models)
        settings = resolve(config.sample, bundle)
        settings.prompt = objects[0].inputs.prompt
        assets, conditions = [], []
        for o in objects:
            inputs = o.inputs
            assets.append(stages.run(o.stage("asset"), {
                "file": file_digest(inputs.asset), "up": inputs.up, "radius": config.radius,
                "mesh_samples": config.mesh_samples, "asset_seed": config.asset_seed},
                lambda folder, inputs=inputs: make_asset(inputs, config, folder)))
            conditions.append(stages.run(o.stage("condition"), {"asset": assets[-1], **{
                k: settings[k] for k in ("views", "size", "elevation", "azimuth")}},
                lambda folder, asset=assets[-1]: make_condition(asset, settings, folder)))
        sampling = {k: v for k, v in settings.to_dict().items() if k != "prompt"}
        sample = stages.run("sample", {"conditions": conditions, "models": models_key,
                                       "prompts": [o.inputs.prompt for o in objects],
                                       **sampling},
                            lambda folder: make_samples(bundle, objects, assets, conditions,
                                                        settings, folder))
        clips = [clip_folder(sample.folder, o) for o in objects]
        s2 = stage_two_config(config, clips, models)
        reconstruct = stages.run("reconstruct", {"sample": sample, "models": models_key,
                                                 "stage2": _inputs_of(s2)},
                                 lambda folder: _reconstruct(s2, folder))
        exports = []
        for o, asset, condition, clip in zip(objects, assets, conditions, clips):
            fitted = (reconstruct.folder if len(objects) == 1
                      else os.path.join(reconstruct.folder, os.path.basename(clip)))
            exports.append(stages.run(o.stage("export"), {
                "reconstruct": reconstruct, "export": config.export.to_dict()},
                lambda folder, o=o, asset=asset, condition=condition, clip=clip,
                fitted=fitted: make_export(config, o.inputs, bundle, asset, condition, clip,
                                           fitted, folder)))
    finally:
        stages.close()
    fitted_dirs = ([reconstruct.folder] if len(objects) == 1 else
                   [os.path.join(reconstruct.folder, os.path.basename(c)) for c in clips])
    metrics = [_read_json(os.path.join(d, "metrics.json")) for d in fitted_dirs]
    return {"export": exports[0].folder, "exports": [e.folder for e in exports],
            "stages": _read_json(os.path.join(workdir, "run.json")),
            "metrics": metrics[0] if len(metrics) == 1 else metrics}
