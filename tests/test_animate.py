"""The animate job (`python -m t4a_jax.animate`, `t4a_jax.animate.job.run`) on a tiny
random Stage One bundle and a small mesh: bad input fails before anything is written;
the whole job runs, a run stopped during Stage Two resumes it, a rerun skips every
stage, a changed prompt reruns sample, reconstruct and export only, and every export
is there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from t4a_jax.animate.job import StageInterrupted, run
from t4a_jax.config_files import get_config
from t4a_jax.models import ModelBundle, save_bundle
from t4a_jax.models.bundle import SamplingDefaults
from t4a_jax.models.tokenizer import CLIPTokenizer
from t4a_jax.render.ply import load_ply
from t4a_jax.video import read_video

from tiny_models import tiny_mvvdm_models

FRAMES = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> str:
    bundle = ModelBundle(**tiny_mvvdm_models(CLIPTokenizer.byte_level(max_length=32)),
                         sampling=SamplingDefaults(image_size=16, num_views=4,
                                                   num_frames=FRAMES, num_steps=1,
                                                   guidance_scale=2.0))
    path = str(tmp_path_factory.mktemp("animate") / "models")
    save_bundle(bundle, path)
    return path


@pytest.fixture(scope="module")
def mesh_file(tmp_path_factory) -> str:
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    mesh.visual.vertex_colors = np.tile([200, 80, 40, 255], (len(mesh.vertices), 1))
    path = str(tmp_path_factory.mktemp("mesh") / "ball.obj")
    mesh.export(path)
    return path


def _config(models: str, asset: str, **overrides):
    config = get_config("animate")
    config.update(models=models, asset=asset, prompt="a ball bounces", mesh_samples=300)
    s2 = config.stage2
    s2.features, s2.sds.weight = "hexplane", 0.0
    s2.motion.update(resolutions=((4, 4, 4, 4),), channels=4, width=8, sh_terms=1)
    s2.update(views=4, frames_per_step=2, iterations=4, checkpoint_every=2,
              turntable_frames=2, progressive_every=1)
    s2.loss.update(arap_anchors=64, arap_start=2)
    config.export.update(video_size=32, turntable_frames=3, track_grid=3,
                         feature_tap="up_blocks.1.motion_modules.1")
    config.update_from_flattened_dict(overrides)
    return config


def _page_data(page_path) -> dict:
    """The data a viewer.html embeds (`window.T4A_DATA = {...};`)."""
    page = open(page_path, encoding="utf-8").read()
    start = page.index("window.T4A_DATA = ") + len("window.T4A_DATA = ")
    return json.loads(page[start:page.index(";</script>", start)])


def _statuses(out) -> dict[str, str]:
    return {s["name"]: s["status"] for s in out["stages"]["stages"]}


@pytest.mark.slow
def test_the_job_runs_resumes_skips_and_reruns_what_a_new_prompt_changes(
        models, mesh_file, tmp_path, monkeypatch):
    workdir = str(tmp_path / "job")
    with pytest.raises(StageInterrupted, match="reconstruct stopped"):
        run(_config(models, mesh_file, **{"stage2.stop_after": 2}), workdir)
    record = json.loads((tmp_path / "job" / "run.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["asset", "condition", "sample"]

    out = run(_config(models, mesh_file), workdir)
    assert _statuses(out) == {"asset": "skipped", "condition": "skipped",
                              "sample": "skipped", "reconstruct": "resumed", "export": "ran"}
    export = tmp_path / "job" / "export"
    assert out["export"] == str(export)
    assert sorted(os.listdir(export / "frames")) == [f"frame_{f:03d}.ply"
                                                     for f in range(FRAMES)]
    frame = load_ply(str(export / "frames" / "frame_002.ply"))
    for name in ("multiview", "turntable", "compare"):
        for ext in ("mp4", "gif"):
            assert (export / f"{name}.{ext}").stat().st_size > 0, name
    assert read_video(str(export / "multiview.mp4")).shape == (FRAMES, 16, 4 * 16, 3)
    assert read_video(str(export / "turntable.mp4")).shape == (3, 32, 32, 3)
    assert (export / "asset" / "asset.json").exists() or os.listdir(export / "asset")
    page = (export / "viewer.html").read_text()
    assert "T4A_DATA" in page and "http://" not in page and "https://" not in page
    glb = trimesh.load(str(export / "animated.glb"), force="mesh", process=False)
    assert len(glb.vertices) + 0 == len(trimesh.load(mesh_file, process=False).vertices)
    assert frame.num_gaussians > len(glb.vertices)          # vertices + area samples
    assert out["metrics"]["train"]["psnr"] > 0
    figures = json.loads((export / "likeness.json").read_text())
    assert len(figures["silhouette_iou"]) == FRAMES
    assert 0 <= figures["silhouette_iou_mean"] <= 1 and np.isfinite(figures["condition_psnr"])

    assert _page_data(export / "viewer.html")["tracks"]["tracker"].startswith("the U-Net")

    # tools.viewer_tracks remakes the page with CoTracker3's tracks (the stand-in
    # package: every query moves by SHIFT per frame), the rest of the page unchanged.
    pytest.importorskip("torch")
    from fake_cotracker import SHIFT, install_fake_cotracker
    from t4a_jax.export.tracks import grid_queries
    from t4a_jax.reconstruction.clips import load_clip
    from tools import viewer_tracks

    before = _page_data(export / "viewer.html")
    assert viewer_tracks.main(["--workdir", workdir, "--checkpoint",
                               install_fake_cotracker(monkeypatch, tmp_path)]) == 0
    after = _page_data(export / "viewer.html")
    assert after["tracks"]["tracker"] == "cotracker3"
    clip = load_clip(str(tmp_path / "job" / "sample" / "clip"))
    queries = grid_queries(clip.masks[:, 0], 3)
    expected = queries[:, None] + np.arange(FRAMES)[None, :, None, None] * SHIFT
    np.testing.assert_allclose(after["tracks"]["points"], expected, atol=0.01)
    assert {k: v for k, v in after.items() if k != "tracks"} == {
        k: v for k, v in before.items() if k != "tracks"}

    again = run(_config(models, mesh_file), workdir)
    assert set(_statuses(again).values()) == {"skipped"}

    changed = run(_config(models, mesh_file, prompt="a ball spins"), workdir)
    assert _statuses(changed) == {"asset": "skipped", "condition": "skipped",
                                  "sample": "ran", "reconstruct": "ran", "export": "ran"}
    clip = json.loads((tmp_path / "job" / "sample" / "clip" / "clip.json").read_text())
    assert clip["prompt"] == "a ball spins"


@pytest.mark.parametrize("problem", ["missing", "empty_mesh", "other_type", "long_prompt",
                                     "no_vae", "no_prompt"])
def test_bad_input_fails_naming_it_before_anything_is_written(models, mesh_file, tmp_path,
                                                             problem):
    asset, prompt, model_dir = mesh_file, "a ball bounces", models
    if problem == "missing":
        asset, match = str(tmp_path / "nothing.glb"), "nothing.glb: no such file"
    elif problem == "empty_mesh":
        asset, match = str(tmp_path / "empty.obj"), "empty.obj: no triangles"
        (tmp_path / "empty.obj").write_text("v 0 0 0\nv 1 0 0\n")
    elif problem == "other_type":
        asset, match = str(tmp_path / "model.fbx"), "unknown asset type '.fbx'"
        (tmp_path / "model.fbx").write_text("not supported")
    elif problem == "long_prompt":
        prompt, match = "a ball " * 10, "config.prompt has 50 tokens; the text encoder takes 14"
    elif problem == "no_prompt":
        prompt, match = " ", "config.prompt is required"
    else:
        model_dir = str(tmp_path / "models")
        shutil.copytree(models, model_dir)
        shutil.rmtree(os.path.join(model_dir, "vae"))
        match = "no vae/"
    workdir = tmp_path / "job"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run(_config(model_dir, asset, prompt=prompt), str(workdir))
    assert not workdir.exists() or os.listdir(workdir) == []


def test_viewer_tracks_names_what_is_missing(tmp_path, monkeypatch, capsys):
    """tools.viewer_tracks: a WORKDIR without exports and a missing `cotracker` exit 2
    saying so; an export whose clip is gone fails by name (exit 1)."""
    pytest.importorskip("torch")
    from tools import viewer_tracks

    assert viewer_tracks.main(["--workdir", str(tmp_path), "--checkpoint", "x.pth"]) == 2
    assert "no export folder with viewer.json" in capsys.readouterr().err
    export = tmp_path / "dog" / "export"
    export.mkdir(parents=True)
    (export / "viewer.json").write_text(json.dumps({"clip": "../sample/gone", "prompt": "p",
                                                    "title": "t", "jpeg_quality": 80,
                                                    "track_grid": 3}))
    monkeypatch.setitem(sys.modules, "cotracker", None)
    monkeypatch.setitem(sys.modules, "cotracker.predictor", None)
    assert viewer_tracks.main(["--workdir", str(tmp_path), "--checkpoint", "x.pth"]) == 2
    assert "needs the `cotracker` package" in capsys.readouterr().err

    from fake_cotracker import install_fake_cotracker
    checkpoint = install_fake_cotracker(monkeypatch, tmp_path)
    assert viewer_tracks.main(["--workdir", str(tmp_path), "--checkpoint", checkpoint]) == 1
    captured = capsys.readouterr()
    assert f"{export}: failed" in captured.err and "0 viewer(s) remade, 1 failed" in captured.out


def test_command_line_error_exits_1_with_the_message(models, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "t4a_jax.animate", f"--workdir={tmp_path / 'job'}",
         f"--config.models={models}", f"--config.asset={tmp_path / 'none.ply'}",
         "--config.prompt=a ball"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "error: config.asset:" in result.stderr and "none.ply: no such file" in result.stderr


@pytest.mark.slow
def test_a_jobs_file_animates_several_objects_in_one_sampling_batch_and_one_fit(
        models, mesh_file, tmp_path):
    shutil.copy(mesh_file, tmp_path / "ball.obj")
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.6))
    box.export(str(tmp_path / "box.obj"))
    jobs = tmp_path / "jobs.tsv"
    jobs.write_text("# asset\tprompt\nball.obj\ta ball bounces\n\nbox.obj\ta box jumps\n")
    config = _config(models, None, jobs=str(jobs))
    out = run(config, str(tmp_path / "job"))
    statuses = _statuses(out)
    assert list(statuses) == ["ball/asset", "ball/condition", "box/asset", "box/condition",
                              "sample", "reconstruct", "ball/export", "box/export"]
    assert set(statuses.values()) == {"ran"}
    assert out["exports"] == [str(tmp_path / "job" / n / "export") for n in ("ball", "box")]
    for name, prompt in (("ball", "a ball bounces"), ("box", "a box jumps")):
        clip = tmp_path / "job" / "sample" / name / name
        assert json.loads((clip / "clip.json").read_text())["prompt"] == prompt
        assert (tmp_path / "job" / "reconstruct" / name / "metrics.json").exists()
        assert (tmp_path / "job" / name / "export" / "viewer.html").exists()
        assert (tmp_path / "job" / name / "export" / "animated.glb").exists()
    assert [m["train"]["psnr"] > 0 for m in out["metrics"]] == [True, True]

    bad = tmp_path / "bad.tsv"
    bad.write_text("ball.obj a ball without a tab\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected ASSET<TAB>PROMPT"):
        run(_config(models, None, jobs=str(bad)), str(tmp_path / "bad"))


@pytest.mark.slow
def test_the_tiny_variant_trains_its_own_stage_one_and_animates_a_creature(tmp_path):
    """`configs/animate.py:tiny` at micro sizes: the stage_one stage (VAE fit, training,
    the bundle) feeds the rest; a rerun reuses the trained model."""
    config = get_config("animate", "tiny")
    s1 = config.stage_one
    s1.update(total_steps=2, global_batch_size=2)
    s1.synthetic.update(num_objects=2, num_gaussians=1024)
    s1.vae_fit.steps = 3
    s1.sample.every_steps = 0
    s1.checkpoint.every_steps = 2
    s1.random_init.unet.update(block_out_channels=(16, 32))
    config.sample.steps = 2
    config.stage2.update(iterations=2, turntable_frames=2, frames_per_step=2)
    config.stage2.loss.arap_anchors = 64
    config.export.update(video_size=32, turntable_frames=2, track_grid=2)
    out = run(config, str(tmp_path))
    assert _statuses(out)["stage_one"] == "ran"
    assert (tmp_path / "stage_one" / "vae_fit" / "report.json").exists()
    assert [n.startswith("creature_") for n in os.listdir(tmp_path / "inputs")] == [True]
    assert (tmp_path / "export" / "viewer.html").exists()
    assert not (tmp_path / "export" / "animated.glb").exists()     # a 3DGS input
    clip = json.loads((tmp_path / "sample" / "clip" / "clip.json").read_text())
    assert clip["prompt"].startswith("a creature ")
    again = run(config, str(tmp_path))
    assert set(_statuses(again).values()) == {"skipped"}
