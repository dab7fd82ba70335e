"""Tests for the Grain loader (t4a_jax.data.loader): determinism, exact resume, skipped
files counted across worker processes, process shards, and batches on 8 fake devices."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from multidevice import run_on_devices
from t4a_jax.data.loader import MVVideoLoader
from t4a_jax.data.mvvideo import DataWarning
from test_mvvideo import make_dataset, small_config

UIDS = ["ant", "bee", "cat", "dog", "eel"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("loader"), UIDS)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    """Five items; both view 0 (truncated) and view 1 (garbage) of 'cat' are unusable, so
    every clip of 'cat' (views 0, 2, 4, 6 or 1, 3, 5, 7) meets a bad video."""
    root = make_dataset(tmp_path_factory.mktemp("damaged"), UIDS)
    folder = os.path.join(root, "videos", "cat", "walk")
    with open(os.path.join(folder, "view_0.mp4"), "rb") as file:
        data = file.read()
    with open(os.path.join(folder, "view_0.mp4"), "wb") as file:
        file.write(data[:len(data) // 2])
    with open(os.path.join(folder, "view_1.mp4"), "wb") as file:
        file.write(b"\x00garbage" * 300)
    return root


def take(loader, count):
    return [next(loader) for _ in range(count)]


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def clip_keys(batches):
    return [(str(u), tuple(v), tuple(f)) for b in batches
            for u, v, f in zip(b["uid"], b["views"], b["frame_indices"])]


def test_batches_are_deterministic_for_a_seed(dataset):
    config = small_config(dataset)
    with MVVideoLoader(config, 4, seed=7) as a, MVVideoLoader(config, 4, seed=7) as b:
        first, second = take(a, 3), take(b, 3)
    assert_same_batches(first, second)
    assert first[0]["frames"].shape == (4, 4, 4, 16, 16, 3)
    # Each epoch visits every item once (12 positions = 2 epochs of 5 + 2).
    uids = [str(u) for batch in first for u in batch["uid"]]
    assert sorted(uids[:5]) == UIDS and sorted(uids[5:10]) == UIDS
    with MVVideoLoader(config, 4, seed=8) as c:
        other = take(c, 3)
    assert clip_keys(other) != clip_keys(first)


def test_resume_from_a_saved_state_gives_exactly_the_next_batches(dataset):
    config = small_config(dataset)
    with MVVideoLoader(config, 2, seed=3) as loader:
        take(loader, 2)
        state = json.loads(json.dumps(loader.get_state()))   # as a checkpoint holds it
        following = take(loader, 3)
        stats = loader.stats()
    with MVVideoLoader(config, 2, seed=3) as restored:
        restored.set_state(state)
        assert_same_batches(take(restored, 3), following)
        assert restored.stats() == stats and stats["batches"] == 5

    with MVVideoLoader(config, 2, seed=4) as wrong_seed:
        with pytest.raises(ValueError, match="seed=3.*seed=4"):
            wrong_seed.set_state(state)
    with MVVideoLoader(small_config(dataset, max_start=1), 2, seed=3) as wrong_clip:
        with pytest.raises(ValueError, match="max_start=2.*max_start=1"):
            wrong_clip.set_state(state)


def test_corrupted_videos_are_skipped_warned_and_counted(damaged):
    config = small_config(damaged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with MVVideoLoader(config, 5, seed=0) as loader:
            batches = take(loader, 2)      # two epochs: 'cat' comes up at least twice
            stats = loader.stats()
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    folder = os.path.join(damaged, "videos", "cat", "walk")
    bad_files = (os.path.join(folder, "view_0.mp4"), os.path.join(folder, "view_1.mp4"))
    assert len(messages) >= 2 and all(any(f in m for f in bad_files) for m in messages)
    assert stats["skipped_videos"] == len(messages)
    assert stats["examples"] == 10 and stats["batches"] == 2
    for batch in batches:             # full batches of good items
        assert batch["frames"].shape[0] == 5 and "cat" not in batch["uid"]


def test_worker_processes_resume_with_the_same_batches_and_stats(damaged):
    config = small_config(damaged)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with MVVideoLoader(config, 3, seed=1) as local:
            take(local, 3)
            state = local.get_state()
            before = local.stats()
            expected = take(local, 3)    # positions 9..17: all of epoch 2 meets 'cat'
            expected_stats = local.stats()
        # A state saved in-process resumes in 2 workers (batches alternate between them);
        # the skips they meet reach this process's statistics.
        with MVVideoLoader(config, 3, seed=1, num_workers=2) as workers:
            workers.set_state(state)
            assert_same_batches(take(workers, 3), expected)
            assert workers.stats() == expected_stats
    assert expected_stats["skipped_videos"] > before["skipped_videos"]


def test_process_shards_split_each_global_batch(dataset):
    config = small_config(dataset)
    with MVVideoLoader(config, 4, seed=5, process_count=1) as whole:
        global_batches = take(whole, 2)
    parts = []
    for process in range(2):
        with MVVideoLoader(config, 4, seed=5, process_index=process, process_count=2) as part:
            parts.append(take(part, 2))
    for step, global_batch in enumerate(global_batches):
        for name, value in global_batch.items():
            np.testing.assert_array_equal(
                np.concatenate([parts[0][step][name], parts[1][step][name]]), value)
    with pytest.raises(ValueError, match="global_batch_size 3 must be a positive multiple "
                                         "of process_count 2"):
        MVVideoLoader(config, 3, seed=0, process_index=0, process_count=2)
    with pytest.raises(ValueError, match="gives 1 example.*at least 2"):
        MVVideoLoader(config, 1, seed=0)


def test_an_unusable_index_fails_when_the_loader_is_made(tmp_path):
    with pytest.raises(ValueError, match=os.path.join(str(tmp_path), "uid_info_dict.json")):
        MVVideoLoader(small_config(tmp_path), 2, seed=0)


def test_batches_shard_over_the_data_axis_of_8_devices(dataset):
    run_on_devices(f"""
        import jax
        import numpy as np
        from jax.sharding import PartitionSpec
        from t4a_jax.data.loader import MVVideoLoader, shard_batch
        from t4a_jax.sharding import make_mesh
        from test_mvvideo import small_config

        assert jax.device_count() == 8
        with MVVideoLoader(small_config({dataset!r}), 8, seed=0) as loader:
            host = next(loader)
        for data, fsdp in ((8, 1), (4, 2)):
            mesh = make_mesh(data=data, fsdp=fsdp)
            batch = shard_batch(host, mesh)
            assert isinstance(batch["uid"], np.ndarray) and batch["uid"].shape == (8,)
            rows = 8 // data
            for name in ("frames", "cameras", "masks", "tracks", "query_valid", "index"):
                array = batch[name]
                assert isinstance(array, jax.Array) and array.shape == host[name].shape
                assert array.sharding.spec == PartitionSpec("data"), array.sharding.spec
                # Device (d, f) of the mesh holds rows [rows d, rows (d + 1)).
                shards = {{s.device: s for s in array.addressable_shards}}
                for (d, f), device in np.ndenumerate(mesh.devices):
                    part = slice(rows * d, rows * (d + 1))
                    assert shards[device].index[0] == part, (name, d, f)
                    np.testing.assert_array_equal(np.asarray(shards[device].data),
                                                  host[name][part])
        print("ok")
    """)
