"""What every long-running program shares for stopping and resuming: an Orbax
`CheckpointManager` with the project's options, and the SIGTERM (preemption) flag.

    manager = make_manager(os.path.join(workdir, "checkpoints"), every_steps=100,
                           max_to_keep=3, async_save=True, item_names=("state",))
    with Preemption() as preemption:
        while ...:
            if preemption.requested: ...save and stop at this step boundary...

Saves are asynchronous when asked (the device->host copy happens before `save` returns,
so donated buffers can be reused at once); a checkpoint directory appears only when
complete (Orbax's atomic finalisation), so a run killed at any moment resumes from the
last complete one.
"""

from __future__ import annotations

import os
import signal
from typing import Sequence

import orbax.checkpoint as ocp


def make_manager(directory: str, *, every_steps: int, max_to_keep: int, async_save: bool,
                 item_names: Sequence[str]) -> ocp.CheckpointManager:
    """A manager of `directory` (created) keeping the last `max_to_keep` checkpoints,
    saving every `every_steps` steps unless forced."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every_steps, max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), item_names=tuple(item_names),
                                 options=options)


class Preemption:
    """A context in which SIGTERM sets `requested` instead of killing the process, for
    the loop to save and stop at its next step boundary; the previous handler is put
    back on exit. Outside the main thread (where handlers cannot be set) it never
    fires."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "Preemption":
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:        # not the main thread
            self._previous = None
        return self

    def _handle(self, *_) -> None:
        self.requested = True

    def __exit__(self, *_) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
