"""Atomic writes: a file or directory appears complete at its path or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; rename it onto `path` on
    success, remove it on any error.

    The temporary name keeps the extension (`.name.tmp-<hex>.ext`) so that writers which
    infer a format from it still work. It is created with O_EXCL (never clobbering another
    file) and mode 0o666, so the umask applies as for `open()`.
    """
    directory, base = os.path.split(os.path.abspath(os.fspath(path)))
    stem, suffix = os.path.splitext(base)
    tmp_path = os.path.join(directory, f".{stem}.tmp-{secrets.token_hex(8)}{suffix}")
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary sibling directory of `path` to fill; on success it replaces
    `path` (an existing directory there is removed first), on any error it is removed."""
    path = os.path.abspath(os.fspath(path))
    parent, base = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{base}.tmp-{secrets.token_hex(8)}")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
