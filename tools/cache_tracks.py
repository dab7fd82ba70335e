"""`python -m tools.cache_tracks`: the track cache of an MV-Video data set.

    python -m tools.cache_tracks --root ROOT --tracker cotracker3 --checkpoint CKPT
    python -m tools.cache_tracks --root SYNTH --tracker oracle --score
    python -m tools.cache_tracks --root ROOT --tracker cotracker3 --checkpoint CKPT \
        --device cuda:1 --views 0,4,8,12 --frames ::3 --uids uid_a,uid_b --limit 10 \
        --out ROOT/tracks_cotracker3

For every item (uid, anim) of `ROOT/uid_info_dict.json` with videos (`read_index`), in
index order, filtered by `--uids` and cut to the first `--limit`, it writes one track
file `OUT/<uid>/<anim>.npz` (`t4a_jax.data.tracks.TrackSet`, written atomically; OUT is
`--out`, default ROOT/tracks, the reader's `tracks_dir`). For V views (`--views`,
default all of the item's videos), F frames (`--frames START:STOP:STEP`, default every
frame of the videos) and S = `--size` (default 256, the training resolution):

    queries     [V, N, 2]     `grid_queries(S, S, 15)`, N = 225, on the first cached frame
    valid       [V, N]        the query lies inside the object mask at that frame
    tracks      [V, F, N, 2]  (x, y) in pixels of the S x S frames, pixel centres at +0.5
    visibility  [V, F, N]     False wherever `valid` is False
    views [V], frames [F], size (S, S), tracker ('cotracker3' or 'oracle')

Trackers (`--tracker`):
- `cotracker3`: CoTracker3 offline (`cotracker.predictor.CoTrackerPredictor`, the
  `scaled_offline.pth` weights given by `--checkpoint`), one call per view on `--device`
  (default cuda when available). Each view's frames are read and resized to S x S
  exactly as the training reader does (`t4a_jax.data.mvvideo`: Pillow bicubic), and its
  mask at the first cached frame is the reader's (the view's mask file, else the
  background; area-downsampled, kept where at least half covered). Only valid queries
  are tracked; invalid ones keep their query point as track.
- `oracle`: the exact tracks of a synthetic set, `ROOT/exact_tracks/<uid>/<anim>.npz`,
  at the requested views and frames, rescaled to S x S (x by S / width, y by S / height:
  exact in the +0.5 convention). Nothing else is recomputed; the tracker name becomes
  'oracle' so that a cache never passes for ground truth. The exact queries sit on video
  frame 0, so `--frames` must start there.

Resumable: an item whose track file exists is skipped (unless `--overwrite`); one made by
another tracker or at another size stops that item with a message (use `--overwrite` or
another `--out`). An item that fails (a missing or undecodable video, a bad mask or
exact-track file, a tracker error) is reported, counted and skipped; the run goes on and
ends with a summary (written, skipped as finished, failed with names) and exit status 1
if any failed (2 for a bad command line or a missing `cotracker` package).

`--score` then scores every selected item's cached tracks against its exact tracks with
`t4a_jax.evaluation.tapvid.score_tracks` (TAP-Vid, queries on the first cached frame) and
prints, per tracker name found in the cache, the mean over items of delta_avg, occlusion
accuracy and average Jaccard in percent: how a user checks CoTracker3 on synthetic data.
Scoring needs the same query points, so a synthetic set scored against a CoTracker3
cache must be generated at `--size` (a 15x15 grid at 64 pixels, scaled to 256, is not
the grid at 256).

The project's randomness never depends on torch's global generator (this tool has
none); importing `cotracker` reseeds that generator (`torch.manual_seed(0)` at import),
so the import and the model's construction run under `torch.random.fork_rng`, which
restores the caller's state.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from t4a_jax.data.mvvideo import (Clip, Item, MVVideoConfig, read_index, read_view,
                                  resize_images, resize_masks, view_masks)
from t4a_jax.data.tracks import (GRID_SIZE, TrackSet, grid_queries, load_tracks,
                                 queries_in_mask, rescale_tracks, save_tracks)
from t4a_jax.evaluation.tapvid import score_tracks
from t4a_jax.tracking.video_tracker import VideoTracker
from tools.cotracker import COTRACKER3_WEIGHTS, CoTracker3

TRACKERS = ("cotracker3", "oracle")  # also the tracker names written to the files
EXACT_DIR = "exact_tracks"
# Failures of one item that the run survives; anything else is a bug and stops it.
ITEM_ERRORS = (ValueError, OSError, RuntimeError)
SCORE_COLUMNS = (("delta_avg", "average_pts_within_thresh"),
                 ("occlusion_acc", "occlusion_accuracy"),
                 ("average_jaccard", "average_jaccard"))


@dataclasses.dataclass(frozen=True)
class FrameRange:
    """Video frames start, start + step, ... below stop (None: the video's length)."""

    start: int = 0
    stop: int | None = None
    step: int = 1

    @classmethod
    def parse(cls, text: str) -> "FrameRange":
        """'START:STOP:STEP' with every part optional ('::3', '0:48', '' for all)."""
        parts = text.split(":") if text else []
        if len(parts) > 3 or not all(p.strip().isdigit() for p in parts if p.strip()):
            raise argparse.ArgumentTypeError(
                f"--frames must be START:STOP:STEP with optional non-negative parts, "
                f"got {text!r}")
        start, stop, step = ([int(p) if p.strip() else None for p in parts]
                             + [None] * (3 - len(parts)))
        start, step = start or 0, 1 if step is None else step
        if step < 1 or (stop is not None and stop <= start):
            raise argparse.ArgumentTypeError(f"--frames {text!r} selects no frame")
        return cls(start, stop, step)

    def resolve(self, num_frames: int) -> np.ndarray:
        """int32 [F] frame indices into a video of `num_frames` frames."""
        stop = num_frames if self.stop is None else self.stop
        if stop > num_frames or self.start >= num_frames:
            raise ValueError(f"{num_frames} frames, --frames needs frame "
                             f"{max(stop - 1, self.start)}")
        return np.arange(self.start, stop, self.step, dtype=np.int32)


@dataclasses.dataclass(frozen=True)
class Options:
    """What every item's track file is made of (see the module docstring)."""

    root: str
    views: tuple[int, ...] | None = None
    frames: FrameRange = FrameRange()
    size: int = 256
    mask_threshold: float = MVVideoConfig.mask_threshold

    def __post_init__(self) -> None:
        # The reader's own checks of the values they share with it.
        MVVideoConfig(self.root, size=self.size, mask_threshold=self.mask_threshold)


def load_view(options: Options, item: Item, view: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view as the reader sees it: frames int32 [F], video uint8 [F, S, S, 3] at those
    frames, and the object mask bool [S, S] at the first of them."""
    video = read_view(options.root, item, view, frames_needed=1)
    try:
        frames = options.frames.resolve(len(video))
    except ValueError as e:
        raise ValueError(f"view {view}: {e}") from e
    # The cached frames as one reader clip (start frames[0], stride step), so that the
    # reader's checks ask for exactly frames[-1] + 1 frames of a mask file.
    config = MVVideoConfig(options.root, size=options.size, num_frames=len(frames),
                           frame_stride=options.frames.step, max_start=int(frames[0]),
                           tracks_dir=None, mask_threshold=options.mask_threshold)
    first = Clip(views=np.array([view], np.int32), frames=frames[:1])
    mask = view_masks(config, item, view, first, video[frames[:1]])
    mask = resize_masks(mask, options.size)
    return frames, resize_images(video[frames], options.size, Image.Resampling.BICUBIC), mask[0]


def item_views(options: Options, item: Item) -> list[int]:
    """The views to cache: `options.views`, or every video of the item."""
    return list(range(item.num_views)) if options.views is None else list(options.views)


def track_item(options: Options, item: Item, tracker: VideoTracker) -> TrackSet:
    """The track set of one item by a video tracker (see the module docstring)."""
    size = options.size
    grid = grid_queries(size, size, GRID_SIZE)
    views = item_views(options, item)
    frames = None
    valid, tracks, visibility = [], [], []
    for view in views:
        view_frames, video, mask = load_view(options, item, view)
        if frames is not None and not np.array_equal(view_frames, frames):
            raise ValueError(f"view {view} has other frames ({len(view_frames)}) than "
                             f"view {views[0]} ({len(frames)}) under --frames")
        frames = view_frames
        inside = queries_in_mask(grid, mask)
        points = np.repeat(grid[None], len(frames), axis=0)
        seen = np.zeros(points.shape[:2], bool)
        if inside.any():
            points[:, inside], seen[:, inside] = tracker(video, grid[inside])
        valid.append(inside)
        tracks.append(points)
        visibility.append(seen)
    return TrackSet(queries=np.repeat(grid[None], len(views), axis=0),
                    valid=np.stack(valid), tracks=np.stack(tracks),
                    visibility=np.stack(visibility), views=np.array(views, np.int32),
                    frames=frames, size=(size, size), tracker=tracker.name)


def exact_path(root: str, item: Item) -> str:
    return os.path.join(root, EXACT_DIR, item.uid, f"{item.anim}.npz")


def oracle_item(options: Options, item: Item) -> TrackSet:
    """The exact tracks of one synthetic item at the requested views, frames and size."""
    path = exact_path(options.root, item)
    exact = load_tracks(path)
    try:
        frames = options.frames.resolve(int(exact.frames[-1]) + 1)
        if frames[0] != exact.frames[0]:
            raise ValueError(f"the exact queries are on frame {exact.frames[0]}, --frames "
                             f"starts at {frames[0]}")
        chosen = exact.select(views=item_views(options, item), frames=frames)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return dataclasses.replace(rescale_tracks(chosen, options.size), tracker="oracle")


@dataclasses.dataclass
class Summary:
    """What a run did: item names written, skipped as finished, and failed (with why)."""

    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def report(self) -> str:
        lines = [f"{len(self.done)} written, {len(self.skipped)} skipped (finished), "
                 f"{len(self.failed)} failed"]
        lines += [f"  failed {name}: {why}" for name, why in self.failed.items()]
        return "\n".join(lines)


def finished(path: str, tracker: str, size: int) -> bool:
    """Whether `path` holds this run's result already. A readable file made by another
    tracker or at another size is a ValueError; an unreadable one is redone."""
    if not os.path.exists(path):
        return False
    try:
        existing = load_tracks(path)
    except ValueError:
        return False
    if existing.tracker != tracker or tuple(existing.size) != (size, size):
        raise ValueError(f"{path}: holds {existing.tracker!r} tracks at {existing.size}, "
                         f"this run makes {tracker!r} at {(size, size)}; use --overwrite "
                         f"or another --out")
    return True


def cache_tracks(items: Sequence[Item], out: str, make: Callable[[Item], TrackSet],
                 tracker: str, size: int, *, overwrite: bool = False) -> Summary:
    """Write `make(item)` to `out/<uid>/<anim>.npz` for every item (see the module
    docstring: resumable, atomic, failures counted)."""
    summary = Summary()
    progress = tqdm(items, desc=f"tracks ({tracker})", unit="item", dynamic_ncols=True)
    for item in progress:
        name = f"{item.uid}/{item.anim}"
        path = os.path.join(out, item.uid, f"{item.anim}.npz")
        try:
            if not overwrite and finished(path, tracker, size):
                summary.skipped.append(name)
                continue
            save_tracks(path, make(item))
            summary.done.append(name)
        except ITEM_ERRORS as e:
            summary.failed[name] = f"{type(e).__name__}: {e}"
            progress.write(f"failed {name}: {e}", file=sys.stderr)
        progress.set_postfix(failed=len(summary.failed), refresh=False)
    return summary


def score_cache(root: str, out: str, items: Sequence[Item]
                ) -> tuple[dict[str, list[dict[str, float]]], dict[str, str]]:
    """Per tracker name, the `score_tracks` metrics of each item's cache against its
    exact tracks (rescaled to the cache's size); and why items could not be scored."""
    scores: dict[str, list[dict[str, float]]] = {}
    problems = {}
    for item in items:
        try:
            tracker, metrics = score_item(root, out, item)
        except ValueError as e:
            problems[f"{item.uid}/{item.anim}"] = str(e)
            continue
        scores.setdefault(tracker, []).append(metrics)
    return scores, problems


def score_item(root: str, out: str, item: Item) -> tuple[str, dict[str, float]]:
    """(tracker name, `score_tracks` metrics) of one item's cached tracks."""
    path = os.path.join(out, item.uid, f"{item.anim}.npz")
    reference_path = exact_path(root, item)
    cached, exact = load_tracks(path), load_tracks(reference_path)
    try:
        reference = rescale_tracks(exact, cached.size[0]).select(cached.views, cached.frames)
        return cached.tracker, score_tracks(cached, reference)
    except ValueError as e:
        raise ValueError(f"{path} against {reference_path} (exact tracks at {exact.size}, "
                         f"cache at {cached.size}): {e}") from e


def score_table(scores: dict[str, list[dict[str, float]]]) -> str:
    """One row per tracker: items and the mean of each `SCORE_COLUMNS` metric (%)."""
    rows = [f"{'tracker':<14}{'items':>6}" + "".join(f"{c:>17}" for c, _ in SCORE_COLUMNS)]
    for tracker, per_item in sorted(scores.items()):
        means = [np.nanmean([m[key] for m in per_item]) for _, key in SCORE_COLUMNS]
        rows.append(f"{tracker:<14}{len(per_item):>6}"
                    + "".join(f"{v:>17.2f}" for v in means))
    return "\n".join(rows)


def select_items(root: str, uids: Sequence[str] | None, limit: int | None) -> list[Item]:
    """The index's items (any number of views), filtered by uid, the first `limit`."""
    items, _ = read_index(root, num_views=1)
    if uids is not None:
        unknown = sorted(set(uids) - {item.uid for item in items})
        if unknown:
            raise ValueError(f"{root}: --uids {unknown} have no usable item")
        items = [item for item in items if item.uid in set(uids)]
    return items[:limit]


def _views(text: str) -> tuple[int, ...]:
    try:
        views = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--views must be comma-separated view indices, "
                                         f"got {text!r}") from None
    if min(views) < 0 or len(set(views)) != len(views):
        raise argparse.ArgumentTypeError(f"--views must be distinct indices >= 0, "
                                         f"got {text!r}")
    return views


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cache_tracks",
        description="Cache point tracks (15x15 grid queries on the first frame, inside "
                    "the object mask) of an MV-Video data set, one .npz per animation.")
    parser.add_argument("--root", required=True, help="data set root (uid_info_dict.json)")
    parser.add_argument("--tracker", required=True, choices=TRACKERS)
    parser.add_argument("--checkpoint", help="CoTracker3 scaled_offline.pth (cotracker3)")
    parser.add_argument("--device", help="torch device (default: cuda if available)")
    parser.add_argument("--out", help="track directory (default: ROOT/tracks)")
    parser.add_argument("--views", type=_views, help="e.g. 0,4,8,12 (default: all)")
    parser.add_argument("--frames", type=FrameRange.parse, default=FrameRange(),
                        help="START:STOP:STEP video frames, e.g. ::3 (default: all)")
    parser.add_argument("--size", type=_positive, default=256,
                        help="square size the videos are resized to before tracking")
    parser.add_argument("--mask-threshold", type=float,
                        default=MVVideoConfig.mask_threshold,
                        help="background-mask threshold (the reader's mask_threshold)")
    parser.add_argument("--uids", type=lambda s: s.split(","), help="only these uids")
    parser.add_argument("--limit", type=_positive, help="at most this many items")
    parser.add_argument("--overwrite", action="store_true", help="redo finished items")
    parser.add_argument("--score", action="store_true",
                        help="then score the cache against ROOT/exact_tracks (synthetic)")
    args = parser.parse_args(argv)
    if args.tracker == "cotracker3" and args.checkpoint is None:
        parser.error(f"--tracker cotracker3 needs --checkpoint (scaled_offline.pth from "
                     f"{COTRACKER3_WEIGHTS})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    args = parse_args(argv)
    out = args.out or os.path.join(args.root, "tracks")
    try:
        options = Options(args.root, views=args.views, frames=args.frames, size=args.size,
                          mask_threshold=args.mask_threshold)
        items = select_items(args.root, args.uids, args.limit)
        if args.tracker == "oracle":
            make = functools.partial(oracle_item, options)
        else:
            make = functools.partial(track_item, options,
                                     tracker=CoTracker3(args.checkpoint, args.device))
    except (ValueError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = cache_tracks(items, out, make, args.tracker, args.size,
                           overwrite=args.overwrite)
    print(f"{out}: {summary.report()}")
    status = 1 if summary.failed else 0
    if args.score:
        scores, problems = score_cache(args.root, out, items)
        print(score_table(scores))
        for name, why in problems.items():
            print(f"  not scored {name}: {why}")
        status = status or int(bool(problems))
    return status


if __name__ == "__main__":
    sys.exit(main())
