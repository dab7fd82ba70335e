"""`t4a_jax.stages`: a stage runs once per set of inputs, a rerun skips it, a killed one
resumes in its folder, changed inputs or `redo` start it afresh, and a stage reruns
whenever one it depends on ran again."""

from __future__ import annotations

import json
import os

import pytest

from t4a_jax.stages import Stages, file_digest, fingerprint


class Recorder:
    """Stage functions that record their calls and what their folder held."""

    def __init__(self):
        self.calls: list[tuple[str, list[str]]] = []

    def stage(self, name: str, fail: bool = False):
        def fn(folder: str) -> None:
            self.calls.append((name, sorted(os.listdir(folder))))
            with open(os.path.join(folder, "partial.txt"), "a") as f:
                f.write("x")
            if fail:
                raise KeyboardInterrupt("killed")
            with open(os.path.join(folder, "out.txt"), "w") as f:
                f.write(name)
        return fn


def _job(tmp_path, recorder, *, prompt="a", redo=(), fail=()):
    stages = Stages(str(tmp_path), ("a", "b", "c"), redo=redo, progress=False)
    try:
        a = stages.run("a", {"file": 1}, recorder.stage("a", "a" in fail))
        b = stages.run("b", {"after": a, "prompt": prompt}, recorder.stage("b", "b" in fail))
        stages.run("c", {"after": b}, recorder.stage("c", "c" in fail))
    finally:
        stages.close()
    return [d.status for d in stages.done]


def test_rerun_skips_and_a_changed_input_reruns_that_stage_and_those_after(tmp_path):
    recorder = Recorder()
    assert _job(tmp_path, recorder) == ["ran", "ran", "ran"]
    assert _job(tmp_path, recorder) == ["skipped", "skipped", "skipped"]
    assert len(recorder.calls) == 3
    assert _job(tmp_path, recorder, prompt="b") == ["skipped", "ran", "ran"]
    record = json.loads((tmp_path / "run.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["a", "b", "c"]
    assert [s["status"] for s in record["stages"]] == ["skipped", "ran", "ran"]
    # A changed input starts the stage from an empty folder.
    assert recorder.calls[-2] == ("b", ["started.json"])


def test_redo_forces_a_stage_and_the_stages_after_it(tmp_path):
    recorder = Recorder()
    _job(tmp_path, recorder)
    assert _job(tmp_path, recorder, redo=("b",)) == ["skipped", "ran", "ran"]
    with pytest.raises(ValueError, match="unknown stage.*sampel"):
        _job(tmp_path, recorder, redo=("sampel",))


def test_a_killed_stage_resumes_in_its_folder(tmp_path):
    recorder = Recorder()
    with pytest.raises(KeyboardInterrupt):
        _job(tmp_path, recorder, fail=("b",))
    assert not (tmp_path / "b" / "stage.json").exists()
    assert _job(tmp_path, recorder) == ["skipped", "resumed", "ran"]
    # The resumed stage found what the killed one had left.
    assert recorder.calls[-2] == ("b", ["partial.txt", "started.json"])


def test_fingerprints_follow_content(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = file_digest(str(path))
    path.write_bytes(b"two")
    assert file_digest(str(path)) != first
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    with pytest.raises(TypeError, match="JSON values"):
        fingerprint({"a": object()})
