"""The user study of the paper's Table 3 (Appendix E, after Animate3D): a blinded page
for raters, and the tally of their answers.

    python -m t4a_jax.evaluate.user_study make --methods ours=out/ours,animate3d=out/a3d \
        --references refs/ --out study/
    python -m t4a_jax.evaluate.user_study collect study/key.json ratings_*.json

`make` writes study/user_study.html, ONE self-contained page (frames inlined as JPEG,
nothing fetched; works from file://) to send to raters, and study/key.json, the
un-blinding key to keep. For every object all methods share, the page shows the prompt,
the static model (from `--references`, when given) and each method's animation under
an opaque id, in an order shuffled per rater (seeded by the rater's id), with four 1-5
ratings each: alignment with the text, alignment with the 3D model, motion and
appearance. Export (enabled once every rating is given) downloads
ratings_<rater>.json. `collect` checks every ratings file against the key (same study,
every object and animation rated, values 1-5, no rater twice), un-blinds them and
writes table3.md and table3.json beside the key: per method the mean of all its ratings
on each criterion (the paper's "average of all its ratings"), the paper's rows beside.

A method's animations (`--methods NAME=DIR`): per object `DIR/<object>.gif|.mp4`, or
`DIR/<object>/turntable.gif|.mp4` (a Stage Two output folder), or
`DIR/<object>/export/turntable.gif|.mp4` (an animate workdir). Prompts: `--prompts FILE`
(JSON {object: prompt}), else the 4D asset's asset.json in the same folder
(`asset/` or `export/asset/`). References: `--references DIR` with `<object>.png`,
`.gif` or `.mp4`. Frames are resized to `--size` and at most `--max-frames` are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from importlib import resources
from typing import Sequence

import numpy as np
from PIL import Image

from t4a_jax.atomic import atomic_write
from t4a_jax.evaluate.job import parse_methods
from t4a_jax.evaluation.tables import HEADERS, PAPER, USER_STUDY_COLUMNS, markdown_table
from t4a_jax.video import jpeg_data_uri, read_video

KEY_FORMAT = "t4a_jax.user_study.key"
RATINGS_FORMAT = "t4a_jax.user_study.ratings"
CRITERIA = tuple((key, HEADERS[key]) for key in USER_STUDY_COLUMNS)
VIDEO_NAMES = ("{o}.gif", "{o}.mp4", "{o}/turntable.gif", "{o}/turntable.mp4",
               "{o}/export/turntable.gif", "{o}/export/turntable.mp4")
ASSET_INFOS = ("{o}/asset/asset.json", "{o}/export/asset/asset.json")
REFERENCE_NAMES = ("{o}.png", "{o}.jpg", "{o}.gif", "{o}.mp4")


def _parse_methods(spec: str) -> list[tuple[str, str]]:
    methods = parse_methods(spec)
    if len(methods) < 2:
        raise ValueError(f"--methods: a study compares two or more methods, got "
                         f"{[n for n, _ in methods]}")
    return methods


def _first(folder: str, patterns: Sequence[str], name: str) -> str | None:
    for pattern in patterns:
        path = os.path.join(folder, pattern.format(o=name))
        if os.path.isfile(path):
            return path
    return None


def method_objects(folder: str) -> dict[str, str]:
    """{object name: animation file} of a method's folder (module docstring)."""
    names = {os.path.splitext(e)[0] if os.path.isfile(os.path.join(folder, e)) else e
             for e in os.listdir(folder)}
    found = {name: _first(folder, VIDEO_NAMES, name) for name in sorted(names)}
    return {name: path for name, path in found.items() if path is not None}


def _frames(path: str, size: int, max_frames: int) -> list[np.ndarray]:
    if path.lower().endswith((".png", ".jpg", ".jpeg")):
        frames = np.asarray(Image.open(path).convert("RGB"))[None]
    else:
        frames = read_video(path)
    keep = np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int)
    return [np.asarray(Image.fromarray(frames[i]).resize((size, size), Image.BICUBIC))
            for i in keep]


def _prompt(methods: list[tuple[str, str]], name: str, prompts: dict[str, str]) -> str:
    if name in prompts:
        return str(prompts[name])
    for _, folder in methods:
        info = _first(folder, ASSET_INFOS, name)
        if info:
            with open(info, encoding="utf-8") as f:
                prompt = json.load(f).get("prompt", "")
            if prompt:
                return prompt
    return ""


def make_study(methods_spec: str, out: str, *, references: str | None = None,
               prompts_file: str | None = None, size: int = 200, max_frames: int = 24,
               fps: float = 8.0, quality: int = 80, seed: int | None = None
               ) -> tuple[str, str]:
    """Write OUT/user_study.html and OUT/key.json (module docstring); returns their paths.
    The study's and animations' ids are random (`seed` fixes them, for tests)."""
    methods = _parse_methods(methods_spec)
    found = {name: method_objects(folder) for name, folder in methods}
    shared = sorted(set.intersection(*(set(objects) for objects in found.values())))
    if not shared:
        raise ValueError("no object has an animation in every method: "
                         + "; ".join(f"{n}: {sorted(o) or 'none'}" for n, o in found.items()))
    left_out = sorted(set().union(*found.values()) - set(shared))
    if left_out:
        print(f"warning: left out (not in every method): {', '.join(left_out)}",
              file=sys.stderr)
    prompts = {}
    if prompts_file:
        with open(prompts_file, encoding="utf-8") as f:
            prompts = json.load(f)
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(64))
    token = lambda n: rng.bytes(n).hex()
    study_id = token(8)
    key, objects = {}, []
    for name in shared:
        clips = []
        for method, _ in methods:
            clip_id = token(6)
            key[clip_id] = {"object": name, "method": method}
            clips.append({"id": clip_id, "frames": [
                jpeg_data_uri(f, quality) for f in _frames(found[method][name], size,
                                                           max_frames)]})
        reference = _first(references, REFERENCE_NAMES, name) if references else None
        objects.append({"name": name, "prompt": _prompt(methods, name, prompts),
                        "reference": [jpeg_data_uri(f, quality) for f in
                                      _frames(reference, size, max_frames)]
                        if reference else None,
                        "clips": sorted(clips, key=lambda c: c["id"])})
    data = {"id": study_id, "fps": fps, "criteria": CRITERIA, "objects": objects}
    template = resources.files("t4a_jax.evaluate").joinpath("user_study.html")
    page = template.read_text(encoding="utf-8").replace(
        "__DATA__", json.dumps(data, separators=(",", ":")).replace("</", "<\\/"))
    os.makedirs(out, exist_ok=True)
    html_path, key_path = os.path.join(out, "user_study.html"), os.path.join(out, "key.json")
    with atomic_write(key_path) as f:
        f.write(json.dumps({"format": KEY_FORMAT, "study": study_id,
                            "methods": [m for m, _ in methods], "objects": shared,
                            "clips": key}, indent=1).encode())
    with atomic_write(html_path) as f:
        f.write(page.encode("utf-8"))
    return html_path, key_path


def _load(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e


def tally(key: dict, ratings: dict[str, dict]) -> dict[str, dict[str, float]]:
    """The key and {file: ratings JSON} -> {method: {criterion: mean, "ratings": n,
    "raters": r}}; ValueError naming the file at fault."""
    scores = {m: {c: [] for c, _ in CRITERIA} for m in key["methods"]}
    raters = set()
    for path, answer in ratings.items():
        if answer.get("format") != RATINGS_FORMAT or answer.get("study") != key["study"]:
            raise ValueError(f"{path}: not a ratings file of study {key['study']}")
        rater = answer.get("rater", "")
        if rater in raters:
            raise ValueError(f"{path}: rater {rater!r} answered twice")
        raters.add(rater)
        seen = {}
        for row in answer.get("ratings", []):
            clip = key["clips"].get(row.get("clip"))
            if clip is None:
                raise ValueError(f"{path}: unknown animation id {row.get('clip')!r}")
            for criterion, _ in CRITERIA:
                value = row.get(criterion)
                if not isinstance(value, int) or not 1 <= value <= 5:
                    raise ValueError(f"{path}: {criterion}={value!r} for object "
                                     f"{clip['object']}, expected 1-5")
            seen[row["clip"]] = row
        missing = sorted({key["clips"][c]["object"] for c in key["clips"] if c not in seen})
        if missing:
            raise ValueError(f"{path}: rater {rater!r} did not rate every animation of "
                             f"{', '.join(missing)}")
        for clip_id, row in seen.items():
            method = key["clips"][clip_id]["method"]
            for criterion, _ in CRITERIA:
                scores[method][criterion].append(row[criterion])
    return {m: {**{c: float(np.mean(v)) for c, v in by.items()},
                "ratings": len(by[CRITERIA[0][0]]), "raters": len(raters)}
            for m, by in scores.items()}


def collect(files: Sequence[str], out: str | None = None) -> str:
    """The key (among `files`, by its format) and the ratings files -> table3.md and
    table3.json in `out` (default: the key's folder); returns the Markdown."""
    loaded = {path: _load(path) for path in files}
    keys = [p for p, d in loaded.items() if d.get("format") == KEY_FORMAT]
    if len(keys) != 1:
        raise ValueError(f"collect: give exactly one key.json among the files, got "
                         f"{len(keys)} ({', '.join(keys) or 'none'})")
    key = loaded.pop(keys[0])
    if not loaded:
        raise ValueError("collect: no ratings files")
    table = tally(key, loaded)
    n = next(iter(table.values()))["raters"]
    text = "\n".join([
        f"## Table 3: user study ({n} raters, {len(key['objects'])} objects, 1-5)", "",
        markdown_table(USER_STUDY_COLUMNS, table), "", "Paper, Table 3:", "",
        markdown_table(USER_STUDY_COLUMNS, {f"{k} (paper)": v
                                            for k, v in PAPER["table3"]["user_study"].items()}),
        ""])
    out = out or os.path.dirname(os.path.abspath(keys[0]))
    os.makedirs(out, exist_ok=True)
    with atomic_write(os.path.join(out, "table3.md")) as f:
        f.write(text.encode())
    with atomic_write(os.path.join(out, "table3.json")) as f:
        f.write(json.dumps({"study": key["study"], "methods": table}, indent=1).encode())
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m t4a_jax.evaluate.user_study",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write the rating page and its key")
    make.add_argument("--methods", required=True, help="NAME=DIR,NAME=DIR,...")
    make.add_argument("--out", required=True, help="folder for user_study.html and key.json")
    make.add_argument("--references", help="folder of <object>.png/.gif/.mp4 static views")
    make.add_argument("--prompts", help="JSON file {object: prompt}")
    make.add_argument("--size", type=int, default=200, help="frame size on the page (px)")
    make.add_argument("--max-frames", type=int, default=24, help="frames kept per animation")
    gather = commands.add_parser("collect", help="un-blind ratings files into Table 3")
    gather.add_argument("files", nargs="+", help="key.json and the raters' ratings_*.json")
    gather.add_argument("--out", help="folder for table3.md / table3.json (default: the key's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "make":
            html, key = make_study(args.methods, args.out, references=args.references,
                                   prompts_file=args.prompts, size=args.size,
                                   max_frames=args.max_frames)
            print(f"wrote {html} (send it to raters) and {key} (keep it)")
        else:
            print(collect(args.files, args.out))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
