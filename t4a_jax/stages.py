"""Resumable, cached stages of a job: each stage writes into its own folder of the
workdir and is skipped when it already finished there with the same inputs.

    stages = Stages(workdir, names=("asset", "condition", ...), redo=("sample",))
    asset = stages.run("asset", {"file": file_digest(path), "scale": 1.0}, make_asset)
    video = stages.run("sample", {"prompt": p, "after": asset}, sample)   # asset: a Done
    stages.close()                          # WORKDIR/run.json: every stage's timing

A stage is `fn(folder) -> None` writing its results into WORKDIR/<name>. Its
*fingerprint* is the SHA-256 of its inputs as canonical JSON (`Done` values stand for the
upstream stage's fingerprint and finish time, so a stage reruns whenever one above it
ran again). On `run`:
- WORKDIR/<name>/stage.json holds the same fingerprint (the stage finished with these
  inputs) and `name` is not in `redo`: skipped;
- WORKDIR/<name>/started.json holds the same fingerprint (a run was killed during the
  stage) and `name` is not in `redo`: `fn` runs again in the folder as it was left, so a
  stage that checkpoints (Stage Two) resumes;
- otherwise the folder is emptied and `fn` runs from scratch.
stage.json is written (atomically) only after `fn` returns, so a folder is never taken
for finished when it is not. `run.json` lists each stage's status ('ran', 'resumed',
'skipped'), seconds and fingerprint, rewritten after every stage.

Progress: one bar over the stages (`[k/n] name`, elapsed and remaining time); a stage's
own bars (tqdm) show under it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from typing import Any, Callable, Sequence

from tqdm import tqdm

from t4a_jax.atomic import atomic_write

DONE_FILE = "stage.json"
STARTED_FILE = "started.json"
RECORD_FILE = "run.json"


@dataclasses.dataclass(frozen=True)
class Done:
    """A finished stage: its `folder`, `fingerprint`, finish time and how it ended
    ('ran', 'resumed' or 'skipped')."""

    name: str
    folder: str
    fingerprint: str
    finished: float
    status: str
    seconds: float


def file_digest(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of the file at `path` (an input whose content, not name, matters)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(path: str) -> str:
    """SHA-256 of a file, or of a folder's files (their sorted relative paths and
    contents): a model or an input folder named by content."""
    if os.path.isfile(path):
        return file_digest(path)
    files = sorted(os.path.join(root, name) for root, _, names in os.walk(path)
                   for name in names)
    return fingerprint([[os.path.relpath(f, path), file_digest(f)] for f in files])


def fingerprint(inputs: Any) -> str:
    """SHA-256 of `inputs` as canonical JSON (`Done` -> its fingerprint and finish time)."""
    def default(value):
        if isinstance(value, Done):
            return {"stage": value.name, "fingerprint": value.fingerprint,
                    "finished": value.finished}
        raise TypeError(f"stage inputs must be JSON values or Done, not {type(value)}")
    text = json.dumps(inputs, sort_keys=True, default=default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def _write(path: str, record: dict) -> None:
    with atomic_write(path) as file:
        file.write(json.dumps(record, indent=1).encode())


class Stages:
    """The stages of one job in `workdir` (module docstring). `names` are all stages in
    order (for the progress bar and to check `redo`)."""

    def __init__(self, workdir: str, names: Sequence[str], *, redo: Sequence[str] = (),
                 progress: bool = True):
        unknown = sorted(set(redo) - set(names))
        if unknown:
            raise ValueError(f"config.redo={','.join(redo)}: unknown stage(s) "
                             f"{', '.join(unknown)}; the stages are {', '.join(names)}")
        self.workdir, self.names, self.redo = workdir, tuple(names), set(redo)
        self.done: list[Done] = []
        self._start = time.time()
        self._bar = tqdm(total=len(names), desc="animate", unit="stage", disable=not progress,
                         bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} stages "
                                    "[{elapsed}<{remaining}]")

    def run(self, name: str, inputs: Any, fn: Callable[[str], None]) -> Done:
        """Run (or skip, or resume) stage `name` with `inputs` (module docstring)."""
        if name not in self.names:
            raise ValueError(f"unknown stage {name!r}; the stages are {self.names}")
        folder = os.path.join(self.workdir, name)
        key = fingerprint(inputs)
        position = self.names.index(name) + 1
        self._bar.set_description(f"[{position}/{len(self.names)}] {name}")
        forced = name in self.redo
        done = _read(os.path.join(folder, DONE_FILE))
        if done and done.get("fingerprint") == key and not forced:
            status, seconds, finished = "skipped", 0.0, done["finished"]
        else:
            started = _read(os.path.join(folder, STARTED_FILE))
            resume = bool(started and started.get("fingerprint") == key and not forced
                          and not done)
            if not resume and os.path.exists(folder):
                shutil.rmtree(folder)
            os.makedirs(folder, exist_ok=True)
            _write(os.path.join(folder, STARTED_FILE), {"fingerprint": key})
            begin = time.time()
            fn(folder)
            seconds, finished = time.time() - begin, time.time()
            _write(os.path.join(folder, DONE_FILE),
                   {"fingerprint": key, "finished": finished, "seconds": seconds})
            status = "resumed" if resume else "ran"
        result = Done(name, folder, key, finished, status, seconds)
        self.done.append(result)
        self._bar.update(1)
        self._record()
        return result

    def _record(self) -> None:
        _write(os.path.join(self.workdir, RECORD_FILE), {
            "stages": [{"name": d.name, "status": d.status, "seconds": round(d.seconds, 3),
                        "fingerprint": d.fingerprint} for d in self.done],
            "total_s": round(time.time() - self._start, 3)})

    def close(self) -> None:
        self._bar.close()
