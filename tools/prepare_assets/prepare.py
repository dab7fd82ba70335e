"""`python -m tools.prepare_assets --meshes DIR_OR_FILES --out OUT [--config FILE]
[--set KEY=VALUE ...] [--no-bake] [--blender PATH]`: each mesh normalised, lit by the
four lights of `configs/prepare_assets.py` and baked into vertex colours by Blender run
headless, then turned into 3D Gaussians by the project's mesh loader.

    python -m tools.prepare_assets --meshes meshes/ --out assets/
    python -m tools.prepare_assets --meshes a.glb b.obj --out assets/ --set samples=128
    python -m tools.prepare_assets --meshes coloured/ --out assets/ --no-bake

Per mesh NAME (its file's stem), in OUT:

    baked/NAME.ply, baked/NAME.glb   the normalised mesh with the baked vertex colours
                                     (sRGB bytes; .ply +z up, .glb +y up as glTF is)
    static/NAME.ply                  3D Gaussians (standard 3DGS), the pipeline's input:
                                     one per vertex, `mesh_samples` more on the triangles,
                                     coloured by the baked vertex colours
    previews/NAME.mp4, .gif          a turntable of the Gaussians
    work/NAME/                       Blender's job, log and raw bake (linear radiance)
    contact_sheet.png                every asset's first preview frame, named
    summary.json, summary.md         per asset: status, vertices, faces, Gaussians, bake
                                     seconds, or the error

Blender's part (`blender_bake.py`): the file imported with Blender's own importer
(.obj, .glb, .gltf, .fbx, .ply; their axes converted to Blender's +z up, which is the
project's), all its meshes joined, centred on their bounding box and scaled so the
farthest vertex lies `radius` from the centre; the key, fill and back lights and the
world (background) light of the config; Cycles on the CPU bakes the combined pass
(direct + indirect; diffuse, glossy, transmission, emission) into a float colour
attribute per vertex, so the mesh's own materials and textures give the look. The
linear radiance is converted to sRGB and clipped to [0, 1].

`--no-bake` skips Blender: the mesh's own vertex colours or textures are used by the
mesh loader, normalised the same way (glTF and OBJ read as +y up, as Blender's
importers read them; .ply as +z up).

Assets are resumed: one whose outputs exist and whose record (work/NAME/done.json)
matches the mesh file and the config is kept. A failure (a broken or empty mesh, a
bake error or timeout) is reported by name and counted; the others are still prepared;
the exit status is 1 when any failed.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

import ml_collections
import numpy as np
import trimesh
from PIL import Image, ImageDraw
from tqdm import tqdm

from t4a_jax.atomic import atomic_write
from t4a_jax.config_files import get_config, set_key
from t4a_jax.render.assets import load_asset, normalise
from t4a_jax.render.cameras import orbit_position
from t4a_jax.render.gaussians import Gaussians
from t4a_jax.render.mesh import load_meshes
from t4a_jax.render.ply import save_ply
from t4a_jax.render.views import ViewRenderer, ring_views
from t4a_jax.stages import file_digest, fingerprint
from t4a_jax.video import to_uint8, write_video

MESH_EXTENSIONS = (".obj", ".glb", ".gltf", ".fbx", ".ply")
BLENDER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_bake.py")
INSTALL_BLENDER = ("Blender is not installed: apt-get install blender (Debian), or pass "
                   "--blender PATH; --no-bake converts meshes that already carry vertex "
                   "colours or textures without it")
Y_UP_FILES = (".obj", ".glb", ".gltf")
# +z up (Blender, the project) -> +y up (glTF): (x, y, z) -> (x, z, -y)
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


class BakeError(RuntimeError):
    """Blender failed on one mesh (the message says why and where its log is)."""


@dataclasses.dataclass
class Prepared:
    """One asset's outcome (a row of the summary)."""

    name: str
    mesh: str
    status: str                      # 'prepared', 'kept' or 'failed'
    vertices: int = 0
    faces: int = 0
    gaussians: int = 0
    bake_seconds: float | None = None
    error: str = ""


def find_meshes(spec: Sequence[str]) -> list[str]:
    """Mesh files named by `spec` (files, or folders searched for MESH_EXTENSIONS)."""
    found = []
    for entry in spec:
        if os.path.isdir(entry):
            found += sorted(os.path.join(entry, n) for n in os.listdir(entry)
                            if n.lower().endswith(MESH_EXTENSIONS))
        elif os.path.isfile(entry):
            found.append(entry)
        else:
            raise ValueError(f"--meshes: {entry}: no such file or folder")
    if not found:
        raise ValueError(f"--meshes {' '.join(spec)}: no mesh files ({', '.join(MESH_EXTENSIONS)})")
    names = [os.path.splitext(os.path.basename(p))[0] for p in found]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"--meshes: two meshes named {twice} (outputs are named by stem)")
    return [os.path.abspath(p) for p in found]


def light_specs(config: ml_collections.ConfigDict) -> list[dict]:
    """The config's lights as Blender's script takes them (positions from the orbit)."""
    specs = []
    for name, light in config.lights.items():
        position = np.asarray(orbit_position(light.elevation, light.azimuth, light.distance))
        specs.append({"name": name, "type": light.type, "position": position.tolist(),
                      "power": float(light.power), "color": list(light.color),
                      "size": float(light.size)})
    return specs


def bake(mesh: str, work: str, config: ml_collections.ConfigDict, blender: str
         ) -> dict[str, np.ndarray]:
    """Blender's bake of `mesh` (module docstring) in `work`: vertices, faces, linear
    colours; BakeError naming the mesh and the log on failure."""
    os.makedirs(work, exist_ok=True)
    job = {"mesh": mesh, "out": os.path.join(work, "bake.npz"), "radius": config.radius,
           "samples": config.samples, "lights": light_specs(config),
           "background": {"color": list(config.background.color),
                          "strength": float(config.background.strength)}}
    job_path, log_path = os.path.join(work, "job.json"), os.path.join(work, "blender.log")
    with open(job_path, "w") as f:
        json.dump(job, f, indent=1)
    if os.path.exists(job["out"]):
        os.remove(job["out"])
    command = [blender, "-b", "--factory-startup", "--python-exit-code", "2",
               "--python", BLENDER_SCRIPT, "--", job_path]
    try:
        with open(log_path, "w") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=config.timeout)
    except subprocess.TimeoutExpired:
        raise BakeError(f"{mesh}: Blender's bake took more than {config.timeout} s "
                        f"(log: {log_path})") from None
    with open(log_path, errors="replace") as log:
        text = log.read()
    reported = [line.split("T4A_BAKE_ERROR: ", 1)[1] for line in text.splitlines()
                if "T4A_BAKE_ERROR: " in line]
    if result.returncode != 0 or not os.path.isfile(job["out"]):
        why = reported[0] if reported else f"exit status {result.returncode}"
        raise BakeError(f"{mesh}: Blender failed: {why} (log: {log_path})")
    with np.load(job["out"]) as data:
        return {k: data[k] for k in data.files}


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear RGB -> sRGB (IEC 61966-2-1), clipped to [0, 1]."""
    c = np.clip(np.asarray(linear, np.float64), 0.0, None)
    srgb = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return np.clip(srgb, 0.0, 1.0)


def write_baked_mesh(stem: str, vertices: np.ndarray, faces: np.ndarray,
                     colors: np.ndarray) -> None:
    """stem.ply (+z up) and stem.glb (+y up) with sRGB uint8 vertex colours."""
    rgba = np.concatenate([np.round(colors * 255), np.full((len(colors), 1), 255)], 1)
    for suffix, points in ((".ply", vertices), (".glb", vertices @ Z_UP_TO_Y_UP.T)):
        mesh = trimesh.Trimesh(points, faces, vertex_colors=rgba.astype(np.uint8),
                               process=False)
        with atomic_write(stem + suffix) as f:
            f.write(mesh.export(file_type=suffix[1:]))


def preview_frames(gaussians: Gaussians, preview: ml_collections.ConfigDict) -> np.ndarray:
    """uint8 [frames, S, S, 3]: the Gaussians on a turntable."""
    views = ring_views(preview.frames, elevation=preview.elevation, size=preview.size)
    renderer = ViewRenderer(preview.size, preview.size, cameras_per_step=4)
    return to_uint8(renderer(gaussians, views.viewmats, views.Ks).colors)


def _record(mesh: str, config: ml_collections.ConfigDict, bake_on: bool) -> str:
    return fingerprint({"mesh": file_digest(mesh), "config": config.to_dict(),
                        "bake": bake_on})


def prepare_one(mesh: str, out: str, config: ml_collections.ConfigDict,
                blender: str | None) -> Prepared:
    """One mesh's outputs (module docstring); raises on failure."""
    name = os.path.splitext(os.path.basename(mesh))[0]
    work = os.path.join(out, "work", name)
    static = os.path.join(out, "static", name + ".ply")
    done = os.path.join(work, "done.json")
    stamp = _record(mesh, config, blender is not None)
    if os.path.isfile(done) and os.path.isfile(static):
        with open(done) as f:
            record = json.load(f)
        if record.get("fingerprint") == stamp:
            return Prepared(**{**record["row"], "status": "kept"})
    for folder in ("static", "previews", "baked"):
        os.makedirs(os.path.join(out, folder), exist_ok=True)
    os.makedirs(work, exist_ok=True)
    seconds = None
    if blender is not None:
        start = time.perf_counter()
        baked = bake(mesh, work, config, blender)
        seconds = time.perf_counter() - start
        vertices, faces = baked["vertices"], baked["faces"]
        write_baked_mesh(os.path.join(out, "baked", name), vertices, faces,
                         linear_to_srgb(baked["colors"]))
        gaussians = load_asset(os.path.join(out, "baked", name + ".ply"),
                               mesh_samples=config.mesh_samples, seed=config.seed)
    else:
        gaussians = load_asset(mesh, mesh_samples=config.mesh_samples, seed=config.seed)
        parts = load_meshes(mesh)
        vertices = np.concatenate([p.vertices for p in parts])
        faces = np.concatenate([p.faces for p in parts])
        up = "y" if mesh.lower().endswith(Y_UP_FILES) else "z"
        gaussians, _ = normalise(gaussians, radius=config.radius, up=up)
    save_ply(static, gaussians)
    write_preview(os.path.join(out, "previews", name), gaussians, config.preview)
    row = Prepared(name, mesh, "prepared", int(len(vertices)), int(len(faces)),
                   int(gaussians.num_gaussians), seconds)
    with atomic_write(done) as f:
        f.write(json.dumps({"fingerprint": stamp, "row": dataclasses.asdict(row)}).encode())
    return row


def write_preview(stem: str, gaussians: Gaussians, preview: ml_collections.ConfigDict) -> None:
    frames = preview_frames(gaussians, preview)
    for suffix in (".mp4", ".gif"):
        write_video(stem + suffix, frames, fps=preview.fps)


def contact_sheet(path: str, out: str, rows: Sequence[Prepared], size: int) -> None:
    """Every prepared asset's first preview frame in a grid, with its name."""
    cells = []
    for row in rows:
        if row.status == "failed":
            continue
        with Image.open(os.path.join(out, "previews", row.name + ".gif")) as gif:
            cells.append((row.name, gif.convert("RGB").resize((size, size))))
    if not cells:
        return
    columns = min(6, len(cells))
    sheet = Image.new("RGB", (columns * size, -(-len(cells) // columns) * (size + 16)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, image) in enumerate(cells):
        x, y = (i % columns) * size, (i // columns) * (size + 16)
        sheet.paste(image, (x, y))
        draw.text((x + 4, y + size + 2), name, fill="black")
    with atomic_write(path) as f:
        sheet.save(f, format="PNG")


def summary_markdown(rows: Sequence[Prepared]) -> str:
    lines = ["| asset | status | vertices | faces | Gaussians | bake (s) | error |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        bake_time = "" if r.bake_seconds is None else f"{r.bake_seconds:.1f}"
        lines.append(f"| {r.name} | {r.status} | {r.vertices} | {r.faces} | {r.gaussians} "
                     f"| {bake_time} | {r.error} |")
    failed = sum(r.status == "failed" for r in rows)
    lines += ["", f"{len(rows) - failed} prepared or kept, {failed} failed"]
    return "\n".join(lines) + "\n"


def prepare_all(meshes: Sequence[str], out: str, config: ml_collections.ConfigDict,
                blender: str | None) -> list[Prepared]:
    """Every mesh (failures recorded, never fatal), then the contact sheet and summary."""
    os.makedirs(out, exist_ok=True)
    rows = []
    bar = tqdm(meshes, desc="prepare", unit="asset")
    for mesh in bar:
        name = os.path.splitext(os.path.basename(mesh))[0]
        bar.set_postfix_str(name)
        try:
            rows.append(prepare_one(mesh, out, config, blender))
        except (ValueError, OSError, BakeError) as e:
            rows.append(Prepared(name, mesh, "failed", error=str(e)))
            print(f"warning: {name} failed: {e}", file=sys.stderr)
    contact_sheet(os.path.join(out, "contact_sheet.png"), out, rows, config.contact_size)
    with atomic_write(os.path.join(out, "summary.json")) as f:
        f.write(json.dumps([dataclasses.asdict(r) for r in rows], indent=1).encode())
    with atomic_write(os.path.join(out, "summary.md")) as f:
        f.write(summary_markdown(rows).encode())
    return rows


def load_config(path: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config file with `KEY=VALUE` overrides (VALUE a Python literal, else a string)."""
    config = get_config(path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        try:
            set_key(config, key, value)
        except ValueError as e:
            raise ValueError(f"--set {item!r}: {e}") from None
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.prepare_assets",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", nargs="+", required=True, help="mesh files or folders")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", default="prepare_assets",
                        help="config file (default configs/prepare_assets.py)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. lights.key.power=300")
    parser.add_argument("--no-bake", action="store_true",
                        help="no Blender: use the meshes' own vertex colours or textures")
    parser.add_argument("--blender", default=None, help="the Blender executable")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        meshes = find_meshes(args.meshes)
        blender = None
        if not args.no_bake:
            blender = args.blender or shutil.which("blender")
            if blender is None or not os.path.isfile(blender):
                raise ValueError(INSTALL_BLENDER)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = prepare_all(meshes, args.out, config, blender)
    print(summary_markdown(rows))
    return 1 if any(r.status == "failed" for r in rows) else 0
