"""`python -m tools.viewer_tracks`: the animate job's viewer with CoTracker3's tracks.

    python -m tools.viewer_tracks --workdir out/dog --checkpoint scaled_offline.pth
    python -m tools.viewer_tracks --workdir out/batch --checkpoint CKPT --device cuda:1 \
        --grid 8

The animate job (`python -m t4a_jax.animate`) draws the viewer's tracks tab with the
Stage One U-Net's feature tracker, because `import t4a_jax` never imports torch. Where
CoTracker3 is installed (the `cotracker` package, not on PyPI; `tools.cotracker`), this
tool remakes each object's `export/viewer.html` of WORKDIR (`WORKDIR/export` for one
object, `WORKDIR/<name>/export` for a jobs file) with CoTracker3's tracks of the same
generated video from the same grid of queries (`t4a_jax.export.tracks.video_tracks`;
`--grid`, default the job's `export.track_grid`). Everything else on the page is as the
job made it: the asset, the videos, the prompt, the starting camera; the page names its
tracker. Each export folder's `viewer.json` (written by the job) says which clip folder
the video is in. The page is replaced atomically; rerunning the job's export stage
writes the feature tracks again.

Exit status 0 when every viewer was remade, 1 when one failed (named, the others still
done), 2 for a bad command line, a WORKDIR with no export or a missing `cotracker`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Sequence

from t4a_jax.animate.job import VIEWER_INPUTS, write_object_viewer
from t4a_jax.export.tracks import video_tracks
from t4a_jax.reconstruction.asset import load_asset4d
from t4a_jax.reconstruction.clips import load_clip

from tools.cotracker import CoTracker3


def export_folders(workdir: str) -> list[str]:
    """The export folders of an animate job's WORKDIR that hold a `viewer.json`."""
    found = glob.glob(os.path.join(workdir, "export", VIEWER_INPUTS)) + sorted(
        glob.glob(os.path.join(workdir, "*", "export", VIEWER_INPUTS)))
    return [os.path.dirname(path) for path in found]


def retrack(folder: str, tracker: CoTracker3, grid: int | None = None) -> str:
    """Remake FOLDER/viewer.html with `tracker`'s tracks; returns the page's path."""
    with open(os.path.join(folder, VIEWER_INPUTS), encoding="utf-8") as file:
        inputs = json.load(file)
    clip = load_clip(os.path.normpath(os.path.join(folder, inputs["clip"])))
    asset4d = load_asset4d(os.path.join(folder, "asset"))
    tracks = video_tracks(tracker, clip.videos, clip.masks[:, 0],
                          grid=grid or inputs["track_grid"])
    return write_object_viewer(folder, asset4d, clip, tracks, prompt=inputs["prompt"],
                               title=inputs["title"], jpeg_quality=inputs["jpeg_quality"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.viewer_tracks",
        description="Remake an animate job's viewer.html with CoTracker3's point tracks.")
    parser.add_argument("--workdir", required=True, help="the animate job's WORKDIR")
    parser.add_argument("--checkpoint", required=True,
                        help="CoTracker3 offline weights (scaled_offline.pth)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if "
                        "available, else cpu)")
    parser.add_argument("--grid", type=int, default=None,
                        help="queries: a GRID x GRID lattice over each view's object "
                        "(default: the job's export.track_grid)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    folders = export_folders(args.workdir)
    if not folders:
        print(f"{args.workdir}: no export folder with {VIEWER_INPUTS} (run "
              f"`python -m t4a_jax.animate --workdir={args.workdir}` first)", file=sys.stderr)
        return 2
    if args.grid is not None and args.grid < 2:
        print(f"--grid must be >= 2, got {args.grid}", file=sys.stderr)
        return 2
    try:
        tracker = CoTracker3(args.checkpoint, args.device)
    except (ImportError, ValueError) as e:
        print(e, file=sys.stderr)
        return 2
    failed = []
    for folder in folders:
        try:
            print(f"{retrack(folder, tracker, args.grid)}: tracks by {tracker.name}")
        except (OSError, KeyError, ValueError) as e:
            failed.append(folder)
            print(f"{folder}: failed: {e}", file=sys.stderr)
    print(f"{len(folders) - len(failed)} viewer(s) remade, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
