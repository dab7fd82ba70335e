"""Stage One training (`t4a_jax.train`) on a micro config: the sharded step equals the
one-device step, a run restored in a new process continues exactly, frozen parameters
stay bit-identical while trainable ones move, a single object is overfitted, bad
configs fail before compiling, a SIGTERM saves and stops, a non-finite loss stops (or is
skipped) naming the step and the batch.

Every run here uses one micro config (two-level MV-VDM at channels (16, 32), 16x16
images, 4 views x 4 frames, batch 2, tiny VAE / CLIP towers, a one-object synthetic set
made once per module), so the jitted step compiles once and the persistent compilation
cache (`JAX_COMPILATION_CACHE_DIR`, shared with the subprocesses) serves the rest.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from multidevice import run_on_devices
from t4a_jax import models as model_io
from t4a_jax.config_files import get_config
from t4a_jax.data import synthetic
from t4a_jax.models.unet import is_trainable

def stage1_config(variant=None):
    return get_config("stage1", variant)


def micro_config(data_root: str, **overrides):
    """The test config; `overrides` are dotted keys, e.g. {'mesh.fsdp': 4}."""
    config = stage1_config("tiny")
    config.random_init.unet.update(block_out_channels=(16, 32))
    config.data.root = str(data_root)
    config.data.size = 16
    config.data.num_frames = 4
    config.synthetic.enabled = False
    config.sample.every_steps = 0
    config.total_steps = 4
    config.optimizer.lr = 3e-3
    config.optimizer.warmup_steps = 0
    config.checkpoint.every_steps = 2
    config.checkpoint.async_save = True
    config.log_every = 1
    config.vae_fit.steps = 0             # tests/test_vae_fit.py
    config.trainable = "paper"
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = config
        for p in path:
            node = node[p]
        node[last] = value
    return config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate_dataset(str(root), 1, synthetic.DatasetSpec(
        views=4, frames=4, size=16, seed=0, num_gaussians=1024))
    return root


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this module and its subprocesses."""
    path = str(tmp_path_factory.mktemp("jax_cache"))
    old = {k: os.environ.get(k) for k in ("JAX_COMPILATION_CACHE_DIR",
                                          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    old_config = {name: getattr(jax.config, name) for name in
                  ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield path
    for name, value in old_config.items():
        jax.config.update(name, value)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def unet_params(workdir) -> dict[str, np.ndarray]:
    unet = model_io.load(os.path.join(workdir, "models", "unet"))
    return {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(unet, nnx.Param))}


def test_bad_configs_fail_before_compiling(data_root, tmp_path):
    from t4a_jax.training.loop import train
    cases = [
        ({"optimizer.lrr": 1.0}, "unknown key"),
        ({"global_batch_size": 3, "grad_accum_steps": 2}, "not divisible"),
        ({"grad_accum_steps": 2, "mesh.data": 2}, "does not fit"),
        ({"mesh.fsdp": 3}, "mesh"),
        ({"checkpoint.every_steps": 0}, "every_steps"),
        ({"data.size": 18}, "multiple of"),      # checked after the models are built
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            train(micro_config(data_root, **overrides), str(tmp_path / "bad"))
    paper = stage1_config()
    paper.data.root = str(data_root)
    with pytest.raises(ValueError, match="init_from"):
        train(paper, str(tmp_path / "paper"))
    assert not (tmp_path / "bad" / "checkpoints").exists()


def test_resume_in_new_process_equals_straight_run_and_frozen_stay(data_root, tmp_path):
    from t4a_jax.training.loop import train
    from t4a_jax.sharding import make_mesh
    from t4a_jax.training.state import random_models
    straight = train(micro_config(data_root), str(tmp_path / "straight"))
    assert straight["step"] == 4 and straight["checkpoint"] == 4
    first = train(micro_config(data_root, stop_after=2), str(tmp_path / "split"))
    assert first["stopped"] == "stop_after" and first["checkpoint"] == 2
    run_on_devices(f"""
        import jax
        jax.config.update("jax_compilation_cache_dir", {os.environ['JAX_COMPILATION_CACHE_DIR']!r})
        from test_train import micro_config
        from t4a_jax.training.loop import train
        out = train(micro_config({str(data_root)!r}), {str(tmp_path / 'split')!r})
        assert out["step"] == 4, out
        print("HISTORY", [s for s, _ in out["history"]])
    """, devices=1)
    a, b = unet_params(tmp_path / "straight"), unet_params(tmp_path / "split")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # The loss history of the resumed steps equals the straight run's.
    resumed = [m["loss"] for s, m in first["history"]]
    np.testing.assert_array_equal(resumed, [m["loss"] for s, m in straight["history"][:2]])

    # Frozen parameters bit-identical to the (seeded) initial model; trainable ones moved.
    config = micro_config(data_root)
    initial = random_models(config, make_mesh(1, 1, devices=jax.devices()[:1])).unet
    init = {".".join(map(str, p)): np.asarray(v.get_value())
            for p, v in nnx.to_flat_state(nnx.state(initial, nnx.Param))}
    trainable = [n for n in init if is_trainable(n)]
    frozen = [n for n in init if not is_trainable(n)]
    assert trainable and frozen
    for name in frozen:
        np.testing.assert_array_equal(init[name], a[name], err_msg=name)
    moved = [n for n in trainable if not np.array_equal(init[n], a[n])]
    assert len(moved) == len(trainable), sorted(set(trainable) - set(moved))[:5]


def test_sharded_step_equals_one_device(data_root, tmp_path):
    out = run_on_devices(f"""
        import jax, numpy as np
        jax.config.update("jax_compilation_cache_dir", {os.environ['JAX_COMPILATION_CACHE_DIR']!r})
        from test_train import micro_config, unet_params
        from t4a_jax.training.loop import train
        root, tmp = {str(data_root)!r}, {str(tmp_path)!r}
        # Adam's first update is lr * g / (|g| + eps): with the default eps a gradient
        # at rounding level (~1e-9) moves a weight by ~lr either way, so reduction order
        # decides; a larger eps keeps the update proportional to the gradient.
        common = {{"total_steps": 1, "optimizer.eps": 1e-2}}
        one = train(micro_config(root, **common, **{{"mesh.data": 1}}), tmp + "/one",
                    devices=jax.devices()[:1])
        eight = train(micro_config(root, **common, **{{"mesh.data": 2, "mesh.fsdp": 4}}),
                      tmp + "/eight")
        a, b = unet_params(tmp + "/one"), unet_params(tmp + "/eight")
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        l1, l8 = one["history"][0][1], eight["history"][0][1]
        for k in ("loss", "diffusion", "correspondence", "position", "grad_norm"):
            np.testing.assert_allclose(l1[k], l8[k], rtol=1e-4, atol=1e-6, err_msg=k)
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
        print("MAXDIFF", worst)
    """, devices=8)
    print(out.strip().splitlines()[-1])
    assert "MAXDIFF" in out


def _fixed_loss(config, data_root, params_source) -> dict[str, float]:
    """Loss parts of the U-Net with `params_source`'s weights on a fixed batch and fixed
    keys (timesteps, noise, points), averaged over 4 keys."""
    from t4a_jax.data.loader import MVVideoLoader
    from t4a_jax.diffusion import make_schedule
    from t4a_jax.sharding import make_mesh
    from t4a_jax.training.objective import StageOneLossConfig, stage_one_loss
    from t4a_jax.training import state as ts
    from t4a_jax.training.loop import prepare_data
    mesh = make_mesh(1, 1, devices=jax.devices()[:1])
    models = ts.random_models(config, mesh)
    if params_source is not None:
        models = dataclasses.replace(models, unet=model_io.load(params_source))
    data, _ = prepare_data(config, "/unused")
    loader = MVVideoLoader(data, config.global_batch_size, seed=123)
    batch = ts.device_batch(next(loader), models.tokenizer, {})
    graphdefs, frozen = {}, {}
    for name in ("vae", "text_encoder", "image_encoder"):
        graphdefs[name], frozen[name] = nnx.split(getattr(models, name))
    inputs = ts.encode_batch(graphdefs, frozen, jax.tree.map(jnp.asarray, batch),
                             jax.random.key(0))
    loss_config = StageOneLossConfig.from_config_dict(config.loss)
    parts = [stage_one_loss(models.unet, inputs, make_schedule(config.schedule),
                            jax.random.key(k), loss_config, (data.size, data.size))[1]
             for k in range(4)]
    return {k: float(np.mean([p[k] for p in parts])) for k in
            ("loss", "diffusion", "correspondence", "position")}


@pytest.mark.slow
def test_overfits_a_single_object(data_root, tmp_path):
    from t4a_jax.training.loop import train
    config = micro_config(data_root, total_steps=25)
    train(config, str(tmp_path / "overfit"))
    before = _fixed_loss(config, data_root, None)
    after = _fixed_loss(config, data_root, str(tmp_path / "overfit" / "models" / "unet"))
    print("before", before, "after", after)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    for part in ("diffusion", "correspondence", "position"):
        assert after[part] < before[part], (part, before, after)


def test_sigterm_saves_and_stops_at_the_next_step(data_root, tmp_path, monkeypatch):
    """A SIGTERM arriving during step 2 (here: sent while its batch is placed) lets the
    step finish, saves it, and ends the run normally; the old handler is back after."""
    import signal

    import t4a_jax.training.loop as train_module
    placed = []

    def place_and_preempt(batch, mesh):
        placed.append(1)
        if len(placed) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_module.shard_batch.__wrapped__(batch, mesh)

    place_and_preempt.__wrapped__ = train_module.shard_batch
    monkeypatch.setattr(train_module, "shard_batch", place_and_preempt)
    before = signal.getsignal(signal.SIGTERM)
    out = train_module.train(micro_config(data_root, **{"checkpoint.every_steps": 3}),
                             str(tmp_path / "preempted"))
    assert out["stopped"] == "sigterm" and out["step"] == 2, out
    assert out["checkpoint"] == 2, out           # saved at the stop, not at every_steps
    assert signal.getsignal(signal.SIGTERM) is before


def test_non_finite_loss_stops_or_skips(data_root, tmp_path):
    """With an absurd learning rate the first update blows the parameters up: step 2's
    loss is not finite. The run stops naming the step, the batch and the last good
    checkpoint, or with skip_nonfinite counts the skipped updates and finishes."""
    from t4a_jax.training.loop import NonFiniteLoss, train
    config = micro_config(data_root, **{"optimizer.lr": 1e30, "checkpoint.every_steps": 3})
    with pytest.raises(NonFiniteLoss, match=r"at step 2 \(batch synth_0000/anim_0.*"
                                            r"last good checkpoint: step None"):
        train(config, str(tmp_path / "stop"))
    config.skip_nonfinite = True
    out = train(config, str(tmp_path / "skip"))
    assert out["stopped"] == "done" and out["step"] == 4 and out["skipped"] == 3, out


def test_sample_videos_go_to_files_and_tensorboard(tmp_path):
    """Sample videos: a grid (rows objects, columns views) as mp4 + gif + prompts, and an
    animated GIF image summary in TensorBoard (no moviepy needed)."""
    import glob
    import struct

    from tensorboardX import SummaryWriter
    from tensorboardX.proto import event_pb2

    from t4a_jax.training import observe
    from t4a_jax.video import read_video
    videos = np.random.default_rng(0).uniform(size=(2, 3, 5, 16, 16, 3)).astype(np.float32)
    writer = SummaryWriter(str(tmp_path / "tb"))
    examples = [{"uid": "u0", "anim": "a", "prompt": "p0"}, {"uid": "u1", "anim": "a",
                                                            "prompt": "p1"}]
    paths = observe.write_samples(videos, examples, 7, str(tmp_path), 8, writer)
    writer.close()
    assert read_video(paths[0]).shape == (5, 32, 48, 3)
    assert (tmp_path / "samples" / "step_00000007.txt").read_text() == "u0/a: p0\nu1/a: p1\n"
    data = open(glob.glob(str(tmp_path / "tb" / "*"))[0], "rb").read()
    images, offset = [], 0
    while offset < len(data):                      # TFRecord framing of the event file
        length = struct.unpack("<Q", data[offset:offset + 8])[0]
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 16 + length
        images += [(event.step, v.tag, v.image.height, v.image.width,
                    v.image.encoded_image_string[:6]) for v in event.summary.value]
    assert images == [(7, "samples", 32, 48, b"GIF89a")]
