"""Writing and reading RGB videos as frame arrays [F, H, W, 3].

`write_video` takes uint8 frames, or float frames in [0, 1] (converted with rounding and
clipping), and writes `.mp4` (H.264 through PyAV, MPEG-4 Part 2 where libx264 is
missing, yuv420p) or `.gif` (Pillow) atomically. `read_video` decodes any container
FFmpeg reads into uint8 frames [F, H, W, 3]. `jpeg_data_uri` makes one frame a
`data:image/jpeg;base64,...` URI for self-contained HTML pages; `to_uint8` turns
renders in [0, 1] into uint8 images.
"""

from __future__ import annotations

import base64
import io
import os
from fractions import Fraction
from typing import IO

import av
import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from t4a_jax.atomic import atomic_write

VIDEO_EXTENSIONS = (".mp4", ".gif")  # what `write_video` writes


def _as_uint8(frames: ArrayLike, path: str) -> np.ndarray:
    """uint8 frames [F, H, W, 3] from uint8 or float-in-[0, 1] frames, checked."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(f"{path}: frames must have shape [F, H, W, 3] with F, H, W > 0, "
                         f"got {frames.shape}")
    if frames.dtype == np.uint8:
        return frames
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"{path}: frames must be uint8 or float in [0, 1], "
                         f"got dtype {frames.dtype}")
    if not np.all(np.isfinite(frames)):
        raise ValueError(f"{path}: frames hold non-finite values")
    return to_uint8(frames)


def to_uint8(images: ArrayLike) -> np.ndarray:
    """Float images in [0, 1] (any shape) -> uint8, rounded, out-of-range values clipped."""
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)


def _mp4_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _encode_mp4(file: IO[bytes], frames: np.ndarray, fps: float) -> None:
    """H.264 (crf 18) or MPEG-4 (about 2 bits per pixel) in yuv420p, even-sized frames."""
    codec = _mp4_codec()
    _, height, width, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(file, mode="w", format="mp4") as container:
        options = {"crf": "18"} if codec == "libx264" else {}
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec != "libx264":
            stream.bit_rate = int(2 * width * height * float(rate))
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _encode_gif(file: IO[bytes], frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(file, format="GIF", save_all=True, append_images=images[1:],
                   duration=1000.0 / fps, loop=0)


def write_video(path: str | os.PathLike, frames: ArrayLike, fps: float = 24) -> None:
    """Write `frames` [F, H, W, 3] (uint8, or float in [0, 1]) to `path` at `fps`.

    The container follows the extension (case-insensitive):

    - `.mp4`: H.264 (libx264, crf 18) or, where PyAV's FFmpeg lacks libx264, MPEG-4
      Part 2; yuv420p, which needs even sizes, so an odd height or width is padded by
      one row or column replicating the edge (the file is then one pixel larger there).
    - `.gif`: Pillow, a 256-colour adaptive palette per frame, looping forever. GIF
      stores durations in 1/100 s, so the rate is approximate, and Pillow merges
      consecutive identical frames into one longer frame (the file may hold fewer
      frames than `frames`, with the same total duration).

    The video is written to a temporary file beside `path` (`.<name>.tmp-<hex><ext>`)
    and moved into place with `os.replace`: `path` is either untouched or complete, and
    the temporary file is removed on any error.

    Raises:
      ValueError, naming `path`, for an extension other than .mp4/.gif, frames not of
      shape [F, H, W, 3], a dtype other than uint8/float, non-finite values, or fps <= 0.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_EXTENSIONS:
        raise ValueError(f"{path}: unknown video extension {ext!r} "
                         f"(supported: {', '.join(VIDEO_EXTENSIONS)})")
    if not fps > 0:
        raise ValueError(f"{path}: fps must be > 0, got {fps}")
    frames = _as_uint8(frames, path)
    if ext == ".mp4":
        _, height, width, _ = frames.shape
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)),
                        mode="edge")

    with atomic_write(path) as file:
        (_encode_mp4 if ext == ".mp4" else _encode_gif)(file, frames, fps)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames of the first video stream of `path` as uint8 RGB [F, H, W, 3].

    Raises:
      ValueError, naming `path`, when the file is missing, cannot be decoded, has no
      video stream or no frames.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: no video stream")
            frames = [frame.to_ndarray(format="rgb24")
                      for frame in container.decode(container.streams.video[0])]
    except av.FFmpegError as e:
        raise ValueError(f"{path}: cannot decode as a video ({e})") from e
    if not frames:
        raise ValueError(f"{path}: no frames in the video stream")
    return np.stack(frames)


def jpeg_data_uri(frame: ArrayLike, quality: int = 85) -> str:
    """uint8 [H, W, 3] -> 'data:image/jpeg;base64,...' at JPEG `quality`."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
