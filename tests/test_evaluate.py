"""`python -m t4a_jax.evaluate` on its tiny variant (random-weight networks, a synthetic
set, unmoved 4D assets): the tables traced back to metrics.json and to the videos
themselves, the cache on a rerun, a flow plugin, and bad input named before scoring."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from configs.evaluate import get_config
from t4a_jax.evaluate import job
from t4a_jax.evaluation.clip_scores import (RIG_AZIMUTHS, RIG_ELEVATIONS, rig_renders,
                                            rig_views)
from t4a_jax.evaluation.networks import MissingWeights
from t4a_jax.evaluation.video_metrics import temporal_flickering
from t4a_jax.reconstruction.asset import load_asset4d
from t4a_jax.reconstruction.clips import load_clip


class ConstantFlow:
    """A flow plugin (`module:Class`, built with the weights file): every pixel moves
    by (3, 4), 5 px."""

    name = "constant"

    def __init__(self, weights: str):
        assert os.path.isfile(weights)

    def __call__(self, a, b):
        return np.broadcast_to(np.float32([3.0, 4.0]), a.shape[:2] + (2,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("evaluate"))
    return workdir, job.run(get_config("tiny"), workdir)


def _table_rows(text: str, title: str) -> dict[str, list[str]]:
    """{row name: cells} of the Markdown table under the heading containing `title`."""
    section = text.split(title, 1)[1].split("\n\n", 2)[1]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def test_tables_trace_back_to_metrics_and_videos(tiny):
    workdir, metrics = tiny
    assert metrics == json.load(open(os.path.join(workdir, "metrics.json")))
    text = open(os.path.join(workdir, "tables.md")).read()
    table1 = _table_rows(text, "Table 1")
    row = metrics["methods"]["synthetic"]["table1"]
    assert table1["synthetic"][0] == f"{row['i2v']:.4f}"
    assert table1["synthetic"][2] == f"{row['temporal_flickering']:.4f}"
    assert table1["synthetic"][5] == f"{row['aesthetic']:.4f}"
    assert table1["synthetic"][3].startswith("n/a (RAFT: config.flow unset")
    assert row["dynamic_degree"] is None and row["motion_smoothness"] is None
    # The flicker, recomputed from the clip folders' videos directly.
    videos = metrics["methods"]["synthetic"]["videos"]
    assert len(videos) == 2
    data = os.path.join(workdir, "tiny", "data", "videos")
    flickers = [temporal_flickering(video) for uid in sorted(os.listdir(data))
                for video in load_clip(os.path.join(data, uid, "anim_0")).videos]
    assert len(flickers) == 8
    assert row["temporal_flickering"] == pytest.approx(np.mean(flickers), abs=1e-9)
    assert 0 < row["i2v"] <= 1
    # Unmoved assets: every frame is the static object, whatever the network.
    table2 = _table_rows(text, "Table 2")
    scores = metrics["methods"]["unmoved"]["table2"]
    for name, cell in zip(("clip_o_img", "clip_o_text", "clip_f_img", "clip_f_text",
                           "clip_c"), table2["unmoved"]):
        assert cell == f"{scores[name]:.4f}"
    for name in ("clip_o_img", "clip_f_img", "clip_c"):
        assert scores[name] == pytest.approx(1.0, abs=1e-5)
    assert set(metrics["weights"]["sha256"]) == {"dino", "clip", "aesthetic"}
    assert "(paper)" not in text                    # no data set named


def test_rerun_reads_the_cache_and_a_changed_item_is_rescored(tiny, monkeypatch):
    workdir, metrics = tiny
    calls = []
    monkeypatch.setattr(job, "score_clip", lambda *a, **k: pytest.fail("clip rescored"))
    original = job.score_asset
    monkeypatch.setattr(job, "score_asset",
                        lambda net, folder, c: calls.append(folder) or original(net, folder, c))
    config = get_config("tiny")
    config.dataset = "sketchfab28"
    again = job.run(config, workdir)
    assert again["methods"] == metrics["methods"] and calls == []
    assert "Ours (paper) | 0.8884" in open(os.path.join(workdir, "tables.md")).read()
    # A new prompt for one asset: that asset alone is scored again.
    info_path = os.path.join(workdir, "tiny", "assets", "synth_0000", "asset.json")
    info = json.load(open(info_path))
    info["prompt"] = "a different prompt"
    json.dump(info, open(info_path, "w"))
    job.run(config, workdir)
    assert [os.path.basename(f) for f in calls] == ["synth_0000"]


def test_a_flow_plugin_fills_the_dynamic_columns(tiny, tmp_path):
    workdir, _ = tiny
    weights = tmp_path / "weights"
    shutil.copytree(os.path.join(workdir, "tiny", "weights"), weights)
    (weights / "raft-things.pth").write_bytes(b"stand-in")
    config = get_config("tiny")
    config.update(tiny=False, weights=str(weights), flow="test_evaluate:ConstantFlow",
                  methods=f"synthetic={workdir}/tiny/data/videos")
    metrics = job.run(config, str(tmp_path / "out"))
    row = metrics["methods"]["synthetic"]["table1"]
    assert row["dynamic_score"] == pytest.approx(5.0)
    assert row["dynamic_degree"] == 1.0               # 5 px > 6 * 64 / 256 = 1.5 px
    assert "raft" in metrics["weights"]["sha256"] and metrics["flow"] == "constant"


def test_bad_input_is_named_before_anything_is_scored(tiny, tmp_path):
    workdir, _ = tiny
    data = f"{workdir}/tiny/data/videos"
    config = get_config()
    config.update(methods=f"ours={data}", weights=str(tmp_path / "no_weights"))
    with pytest.raises(MissingWeights) as error:
        job.run(config, str(tmp_path / "out"))
    for part in ("dino", "clip", "aesthetic", "raft-things.pth", "amt-s.pth"):
        assert os.path.join(str(tmp_path / "no_weights"), part) in str(error.value)
    assert "--kind dino" in str(error.value)
    assert not (tmp_path / "out").exists()
    config.weights = f"{workdir}/tiny/weights"
    for methods, message in [("ours", "not NAME=DIR"),
                             (f"ours={tmp_path}/absent", "no such folder"),
                             (f"ours={data},ours={data}", "appears twice"),
                             (f"ours={tmp_path}", "holds no clip folder")]:
        config.methods = methods
        with pytest.raises(ValueError, match=re.escape(message)):
            job.run(config, str(tmp_path / "out"))
    config.update(methods=f"ours={data}", flow="", interpolator="", dataset="vbench")
    with pytest.raises(ValueError, match="config.dataset='vbench'"):
        job.run(config, str(tmp_path / "out"))


def test_rig_render_folders_score_like_the_asset_they_show(tiny, tmp_path):
    """Another method's 4D output enters as renders in Animate3D's layout: renders of
    an asset written there score what the asset itself scores."""
    workdir, metrics = tiny
    asset = load_asset4d(os.path.join(workdir, "tiny", "assets", "synth_0001"))
    config = get_config("tiny")
    frames = config.rig.frames
    renders, reference = rig_renders([asset.at(t / (frames - 1)) for t in range(frames)],
                                     asset.canonical, rig_views(config.rig.size))
    folder = tmp_path / "baseline" / "synth_0001"
    names = [f"elv_{e:g}_azi_{a:g}" for e in RIG_ELEVATIONS for a in RIG_AZIMUTHS]
    for name, view, ref in zip(names, renders, reference):
        (folder / "images" / name).mkdir(parents=True)
        for t, image in enumerate(view):
            Image.fromarray(image).save(folder / "images" / name / f"{t}.png")
        (folder / "reference").mkdir(exist_ok=True)
        Image.fromarray(ref).save(folder / "reference" / f"{name}.png")
    (folder / "prompt.txt").write_text(asset.prompt)
    config.update(tiny=False, weights=os.path.join(workdir, "tiny", "weights"),
                  methods=f"baseline={tmp_path / 'baseline'}")
    ours = job.run(config, str(tmp_path / "out"))["methods"]["baseline"]["assets"]
    assert ours["synth_0001"] == pytest.approx(
        metrics["methods"]["unmoved"]["assets"]["synth_0001"], abs=1e-6)
    os.remove(folder / "reference" / f"{names[5]}.png")
    with pytest.raises(ValueError, match=f"{names[5]}.png: missing"):
        job.run(config, str(tmp_path / "out"))
