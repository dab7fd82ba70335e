"""What a training run shows: the progress bar and log line, TensorBoard scalars and the
sample multi-view videos of held-out objects.

Metrics reach the host one step late (the step's scalars are fetched after the next
step has been dispatched), so logging never stalls the device queue.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Any

import numpy as np
from absl import logging
from tensorboardX import SummaryWriter
from tqdm import tqdm
from tensorboardX.proto.summary_pb2 import Summary

from t4a_jax.atomic import atomic_write
from t4a_jax.data.mvvideo import MVVideoConfig, choose_clip, load_example, read_index
from t4a_jax.video import write_video

SHOWN = ("loss", "diffusion", "correspondence", "position")


class Progress:
    """Averages the scalars over a logging window; formats the console line and writes
    TensorBoard scalars (process 0 only)."""

    def __init__(self, workdir: str, total_steps: int, global_batch_size: int,
                 start_step: int, enabled: bool = True):
        self.total, self.batch = total_steps, global_batch_size
        self.writer = None
        if enabled:
            self.writer = SummaryWriter(os.path.join(workdir, "tb"))
        self._window: list[dict[str, float]] = []
        self._t0, self._s0 = time.perf_counter(), start_step
        self.history: list[tuple[int, dict[str, float]]] = []
        self._bar = tqdm(total=total_steps, initial=start_step, desc="stage one",
                         unit="step", disable=not enabled, leave=False)

    def add(self, step: int, metrics: dict[str, float]) -> None:
        self._window.append(metrics)
        self.history.append((step, metrics))
        self._bar.update(step - self._bar.n)

    def flush(self, step: int) -> str | None:
        """Log the window ending at `step` (1-based count of updates done)."""
        if not self._window:
            return None
        mean = {k: float(np.mean([m[k] for m in self._window])) for k in self._window[0]}
        self._window = []
        now = time.perf_counter()
        steps_per_s = (step - self._s0) / max(now - self._t0, 1e-9)
        self._t0, self._s0 = now, step
        eta = datetime.timedelta(seconds=int((self.total - step) / max(steps_per_s, 1e-9)))
        line = (f"step {step}/{self.total} | "
                + " ".join(f"{k} {mean[k]:.4g}" for k in SHOWN)
                + f" | grad_norm {mean['grad_norm']:.3g} lr {mean['lr']:.3g}"
                + f" | {steps_per_s:.2f} steps/s {steps_per_s * self.batch:.2f} samples/s"
                + f" | ETA {eta}")
        logging.info(line)
        self._bar.set_postfix(loss=f"{mean['loss']:.4g}", refresh=False)
        if self.writer is not None:
            for k, v in mean.items():
                self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.add_scalar("perf/steps_per_s", steps_per_s, step)
            self.writer.add_scalar("perf/samples_per_s", steps_per_s * self.batch, step)
            self.writer.flush()
        return line

    def close(self) -> None:
        self._bar.close()
        if self.writer is not None:
            self.writer.close()


def heldout_examples(root: str, data: MVVideoConfig, count: int) -> list[dict[str, Any]]:
    """The first `count` items of a held-out MV-Video folder, each with a fixed clip
    (condition frame, cameras, prompt)."""
    items, _ = read_index(root, data.num_views)
    examples = []
    for item in items[:count]:
        clip = choose_clip(item, data, np.random.default_rng([0, item.index]))
        examples.append(load_example(item, clip, dataclasses.replace(data, root=root)))
    return examples


def write_samples(videos: np.ndarray, examples: list[dict[str, Any]], step: int,
                  workdir: str, fps: float, writer=None) -> list[str]:
    """videos [B, V, F, H, W, 3] in [0, 1] -> one grid video per run of samples (rows:
    objects, columns: views) as mp4 and gif in WORKDIR/samples, and to TensorBoard."""
    b, v, f, h, w, _ = videos.shape
    grid = videos.transpose(2, 0, 3, 1, 4, 5).reshape(f, b * h, v * w, 3)
    folder = os.path.join(workdir, "samples")
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, f"step_{step:08d}.{ext}") for ext in ("mp4", "gif")]
    for path in paths:
        write_video(path, grid, fps=fps)
    with atomic_write(os.path.join(folder, f"step_{step:08d}.txt")) as fh:
        fh.write(("\n".join(f"{e['uid']}/{e['anim']}: {e['prompt']}" for e in examples)
                  + "\n").encode())
    if writer is not None:
        with open(paths[1], "rb") as gif:
            add_gif(writer, "samples", gif.read(), b * h, v * w, step)
        writer.flush()
    return paths


def add_gif(writer, tag: str, gif: bytes, height: int, width: int, step: int) -> None:
    """An animated GIF as a TensorBoard image summary (what `add_video` writes, without
    tensorboardX's optional moviepy encoder: the GIF is already encoded)."""
    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                          step)
