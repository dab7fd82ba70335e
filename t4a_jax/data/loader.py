"""Stage One batches from an MV-Video root with Grain: deterministic, sharded by
process, resumable, decoded in worker processes, placed on the mesh.

The example stream is a pure function of the seed. Position g of the global stream
(epoch g // n over the n items) holds item `perm_epoch[g % n]`, Grain's per-epoch index
shuffle (`MapDataset.shuffle(seed).repeat()`), and draws its views and frames from
`np.random.default_rng([seed, g, 0])`; nothing depends on global random state, thread
timing or the number of workers. Where an item cannot be used (`mvvideo.SkippedItem`:
a missing, truncated or undecodable video, a bad mask file, a missing or bad track
file) attempt a = 1, 2, ... replaces it with a random item drawn from
`default_rng([seed, g, a])`, so batches stay full and the replacement is the same on
every run; `max_attempts` failures in a row at one position raise RuntimeError (a
systematic problem, not one bad file).

Global batch b holds positions [b B, (b + 1) B) for B = `global_batch_size`; process p
of P reads rows [p B / P, (p + 1) B / P) of it (`batch(B / P)[p::P]`), so the global
batch does not depend on the number of processes. Batches are dicts of NumPy arrays with
the example fields of `t4a_jax.data.mvvideo` and a leading batch axis [B / P, ...]
(strings as NumPy str arrays); `shard_batch` makes them global `jax.Array`s.

State and resume: the pipeline is a random-access Grain `MapDataset` of batches, so the
loader's whole position is the number of global batches it has returned. `get_state()`
is a JSON-serialisable dict (that count, the settings that fix the stream, and the
statistics), for example saved with the training checkpoint as
`orbax.checkpoint.args.JsonSave(loader.get_state())`; `set_state` restarts the Grain
pipeline at `batches[count:]`, which yields exactly the batches that would have come
next, with any number of workers or processes. (Grain's own iterator state would also be
exact, but it depends on the worker count and is documented as an implementation detail.)

Statistics: the counts of skipped files travel inside each example (`skips`, one count
per kind, and `skip_log`, the messages), so they reach the parent process from worker
processes with the data; the loader removes these fields from the batch, adds the
counts to `stats()` and warns each message as `mvvideo.DataWarning`. A file met again in
a later epoch counts again.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping

import grain
import jax
import numpy as np
from absl import flags
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from t4a_jax.data.mvvideo import (DataWarning, Item, MVVideoConfig, SkippedItem, choose_clip,
                                  load_example, read_index)
from t4a_jax.sharding import DATA_AXIS

STATE_VERSION = 1
_SKIP_STATS = tuple(f"skipped_{kind}" for kind in SkippedItem.KINDS)
STAT_KEYS = ("batches", "examples", "refused_items") + _SKIP_STATS


class _Examples:
    """(stream position g, item) -> example, with replacement of unusable items and the
    record of what was skipped (`skips` int32 [4] in `SkippedItem.KINDS` order and
    `skip_log`, newline-separated messages)."""

    def __init__(self, items: list[Item], config: MVVideoConfig, seed: int,
                 max_attempts: int):
        self._items, self._config = items, config
        self._seed, self._max_attempts = seed, max_attempts

    def __call__(self, position: int, item: Item) -> dict[str, Any]:
        skips = np.zeros(len(SkippedItem.KINDS), np.int32)
        log = []
        for attempt in range(self._max_attempts):
            rng = np.random.default_rng([self._seed, position, attempt])
            if attempt:
                item = self._items[int(rng.integers(len(self._items)))]
            try:
                example = load_example(item, choose_clip(item, self._config, rng),
                                       self._config)
            except SkippedItem as e:
                skips[SkippedItem.KINDS.index(e.kind)] += 1
                log.append(str(e))
                continue
            return {**example, "skips": skips, "skip_log": "\n".join(log)}
        raise RuntimeError(f"stream position {position}: {self._max_attempts} items in a "
                           f"row could not be used; the last: {log[-1]}")


def _host_only_jax(worker_index: int, worker_count: int) -> None:
    """Grain worker init: keep JAX in data workers on the CPU (no accelerator claims)."""
    del worker_index, worker_count
    jax.config.update("jax_platforms", "cpu")


class MVVideoLoader:
    """An endless iterator of this process's part of each global batch.

        loader = MVVideoLoader(MVVideoConfig(root), global_batch_size=8, seed=0,
                               num_workers=4)
        loader.set_state(saved)            # optional: resume
        batch = shard_batch(next(loader), mesh)
        saved = loader.get_state()

    Args:
      config: what an example is made of (`MVVideoConfig`).
      global_batch_size: examples per step over all processes; must divide by
        `process_count`.
      seed: a 32-bit unsigned integer fixing the order and every random choice.
      num_workers: Grain worker processes decoding batches (0: this process).
      read_threads, prefetch_batches: threads decoding batches ahead, and how many
        batches they keep ready, in each process (Grain `ReadOptions`).
      process_index, process_count: this process's shard (default: JAX's).
      max_attempts: items tried at one stream position before giving up.

    Raises:
      ValueError, naming the file, for an empty or unreadable index; ValueError for
      settings that do not fit (naming them).
    """

    def __init__(self, config: MVVideoConfig, global_batch_size: int, *, seed: int,
                 num_workers: int = 0, read_threads: int = 1, prefetch_batches: int = 2,
                 process_index: int | None = None, process_count: int | None = None,
                 max_attempts: int = 16):
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in "
                             f"[0, process_count={process_count})")
        if global_batch_size <= 0 or global_batch_size % process_count:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive "
                             f"multiple of process_count {process_count}")
        if not 0 <= seed < 2 ** 32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if max_attempts <= 0:
            raise ValueError(f"max_attempts must be > 0, got {max_attempts}")
        items, refused = read_index(config.root, config.num_views)
        self._fingerprint = {
            "seed": seed, "global_batch_size": global_batch_size, "num_items": len(items),
            "max_attempts": max_attempts,
            **{k: v for k, v in dataclasses.asdict(config).items() if k != "root"}}
        local_batch = global_batch_size // process_count
        if local_batch < 2:
            raise ValueError(f"global_batch_size={global_batch_size} over {process_count} "
                             f"process(es) gives {local_batch} example(s) per process; at "
                             f"least 2 are needed (grain cannot index an endless dataset "
                             f"of one-example batches)")
        examples = (grain.MapDataset.source(items).shuffle(seed=seed).repeat()
                    .map_with_index(_Examples(items, config, seed, max_attempts)))
        self._batches = examples.batch(local_batch)[process_index::process_count]
        self._read_options = grain.ReadOptions(num_threads=read_threads,
                                               prefetch_buffer_size=prefetch_batches)
        self._num_workers = num_workers
        self._iterator = None
        self._next_batch = 0
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._stats["refused_items"] = len(refused)

    @property
    def num_items(self) -> int:
        """Items in the index (refused ones excluded): one epoch of examples."""
        return self._fingerprint["num_items"]

    def __iter__(self) -> "MVVideoLoader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            dataset = self._batches[self._next_batch:].to_iter_dataset(self._read_options)
            if self._num_workers:
                # Grain 0.2.18 reads an absl flag when it starts workers, which fails
                # outside an absl app until flags count as parsed (google/grain#1355).
                if not flags.FLAGS.is_parsed():
                    flags.FLAGS.mark_as_parsed()
                dataset = dataset.mp_prefetch(
                    grain.MultiprocessingOptions(num_workers=self._num_workers),
                    worker_init_fn=_host_only_jax)
            self._iterator = iter(dataset)
        batch = dict(next(self._iterator))
        self._next_batch += 1
        self._record(batch.pop("skips"), batch.pop("skip_log"))
        return batch

    def _record(self, skips: np.ndarray, skip_log: np.ndarray) -> None:
        self._stats["batches"] += 1
        self._stats["examples"] += len(skips)
        for key, count in zip(_SKIP_STATS, np.sum(skips, axis=0)):
            self._stats[key] += int(count)
        for message in "\n".join(str(m) for m in skip_log if m).splitlines():
            warnings.warn(f"skipped: {message}", DataWarning, stacklevel=3)

    def stats(self) -> dict[str, int]:
        """Counts since the stream began (restored with the state): batches, examples,
        refused_items (by the index), skipped_videos, skipped_masks,
        skipped_missing_tracks, skipped_bad_tracks."""
        return dict(self._stats)

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state: restoring it gives exactly the batches that come next."""
        return {"version": STATE_VERSION, "next_batch": self._next_batch,
                **self._fingerprint, "stats": dict(self._stats)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue after the batches counted in `state` (from `get_state` of a loader
        with the same settings; a differing setting is a ValueError naming it)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r}, "
                             f"expected {STATE_VERSION}")
        for key, value in self._fingerprint.items():
            if state.get(key) != value:
                raise ValueError(f"loader state was saved with {key}={state.get(key)!r}; "
                                 f"this loader has {key}={value!r}")
        self.close()
        self._next_batch = int(state["next_batch"])
        self._stats.update({key: int(state["stats"][key]) for key in STAT_KEYS
                            if key != "refused_items"})   # that one is this index's

    def close(self) -> None:
        """Stop the worker processes (iteration can start again afterwards)."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    def __enter__(self) -> "MVVideoLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def shard_batch(batch: Mapping[str, Any], mesh: Mesh,
                axis: str | tuple[str, ...] = DATA_AXIS) -> dict[str, Any]:
    """This process's rows of a global batch -> global `jax.Array`s sharded along their
    leading (batch) axis over mesh `axis`, replicated over the other mesh axes.

    Every process passes its own part (`MVVideoLoader` batches); the global batch is
    their concatenation in process order (`jax.make_array_from_process_local_data`).
    String fields stay NumPy arrays on the host. The global batch size must divide by
    the size of `axis`.
    """
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    axis_size = math.prod(mesh.shape[name] for name in
                          ((axis,) if isinstance(axis, str) else axis))
    out = {}
    for name, value in batch.items():
        value = np.asarray(value)
        if value.dtype.kind in "USO":
            out[name] = value
            continue
        global_rows = value.shape[0] * jax.process_count()
        if global_rows % axis_size:
            raise ValueError(f"batch field {name!r}: global batch {global_rows} does not "
                             f"divide over mesh axis {axis!r} of size {axis_size}")
        out[name] = jax.make_array_from_process_local_data(sharding, value)
    return out
