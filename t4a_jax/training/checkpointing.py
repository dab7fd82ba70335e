"""Training checkpoints: Orbax `CheckpointManager` in WORKDIR/checkpoints.

Each checkpoint `<step>/` holds two items:
  state  the train state (`state.py`: step, trainable params, optimizer state, base RNG
         key), `StandardSave`; restored with a sharded abstract target, so every array
         lands in its shards on the mesh.
  data   the loader position and statistics (`MVVideoLoader.get_state()`), `JsonSave`.
Saves are asynchronous (the device->host copy happens before `save` returns, so the
donated state can be reused at once); every `every_steps` steps and forced at the end,
at `stop_after` and on SIGTERM; the last `max_to_keep` are kept. A checkpoint directory
appears only when complete (Orbax's atomic finalisation), so a run killed at any moment
resumes from the last complete one.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import orbax.checkpoint as ocp


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.checkpoint.every_steps,
        max_to_keep=config.checkpoint.max_to_keep,
        enable_async_checkpointing=config.checkpoint.async_save, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 item_names=("state", "data"), options=options)


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
