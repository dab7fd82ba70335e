"""Training checkpoints: Orbax `CheckpointManager` in WORKDIR/checkpoints.

Each checkpoint `<step>/` holds two items:
  state  the train state (`state.py`: step, trainable params, optimizer state, base RNG
         key), `StandardSave`; restored with a sharded abstract target, so every array
         lands in its shards on the mesh.
  data   the loader position and statistics (`MVVideoLoader.get_state()`), `JsonSave`.
Saves (`t4a_jax.checkpoints`: asynchronous, atomic) happen every `every_steps` steps
and are forced at the end, at `stop_after` and on SIGTERM; the last `max_to_keep` are
kept.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from t4a_jax.checkpoints import make_manager as _make_manager


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """The manager of WORKDIR/checkpoints (`t4a_jax.checkpoints.make_manager`) with the
    config's `checkpoint` options and the items `state` and `data`."""
    c = config.checkpoint
    return _make_manager(os.path.join(workdir, "checkpoints"), every_steps=c.every_steps,
                         max_to_keep=c.max_to_keep, async_save=c.async_save,
                         item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         *, force: bool = False) -> bool:
    """Save at `step` when the interval says so (or `force`); True when a save began."""
    return manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)


def restore(manager: ocp.CheckpointManager, target: Any, step: int | None = None
            ) -> tuple[Any, dict]:
    """(train state, data state) of `step` (default: the latest)."""
    step = manager.latest_step() if step is None else step
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]
