"""An elastic commit saved as the run's latest checkpoint, by one process, without a collective.

When a peer is lost in an elastic job (HorovodInternalError), every surviving process holds the job's
last commit in memory. Should the job then end (fewer than --min-np processes for longer than
HOROVOD_ELASTIC_TIMEOUT), that commit is all that is left of the steps since the last evaluation, and
the usual save (a collective: the RNG states are gathered) is impossible: the world is gone. So each
survivor writes the commit itself, as latest.ckpt and training_progress.json in the format every
save uses (the epoch's position in samples included, as the time-limit save writes it mid-epoch), so
that --resume continues from it.

Several survivors may share one disk: each writes a temporary file of its own (host and pid in its
name) and renames it over the old file, so a reader sees one complete file at every instant, and since
they all hold the same commit, whichever rename comes last leaves the same content. On a private disk
per host each host gets its own copy. A checkpoint on disk from the same step or a later one is kept:
a commit never replaces a newer checkpoint (the check and the rename are done under a lock on the directory
that rank 0's saves take too). The RNG states are left out (a process knows only its
own): the resumed run does not restore them, as a run resumed at another world size does not.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Tuple

import torch

from hvd_trainer.checkpoint import CheckpointManager, atomic_write_text, directory_lock, write_error, write_state
from hvd_trainer.progress import ProgressTracker


def checkpoint_position(path: str) -> Optional[Tuple[int, int]]:
    """(step, epoch) of the checkpoint at `path`; None when there is none or it cannot be read (a broken
    latest.ckpt may be replaced by a commit). Memory-mapped: the weights are not read."""
    if not os.path.exists(path):
        return None
    try:
        progress = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["meta"]["progress"]
        return int(progress["steps"]), int(progress["epoch"])
    except Exception:  # noqa: BLE001 - any unreadable file counts as none (torch raises many types here)
        return None


def checkpoint_step(path: str) -> Optional[int]:
    """The training step of the checkpoint at `path` (see checkpoint_position)."""
    position = checkpoint_position(path)
    return position[0] if position else None


def save_commit(manager: CheckpointManager, progress_path: str, states: Dict[str, Any],
                progress: ProgressTracker) -> bool:
    """Write a commit (`states`: model, optimizer, scheduler, scaler as state dicts; `progress` its tracker) as
    latest.ckpt and training_progress.json, unless the checkpoint on disk is from the same step or later.
    True when written; a failed write raises CheckpointError (the files before it are intact)."""
    manager.wait()  # a checkpoint this process queued earlier goes first
    state = manager.checkpoint.state_of(states, progress=progress.to_dict(), rng_states=None)
    try:
        with directory_lock(manager.directory):  # no other writer between the check and the rename
            on_disk = checkpoint_step(manager.latest_path)
            if on_disk is not None and on_disk >= progress.steps:
                return False
            manager.rotate_previous()
            write_state(manager.latest_path, state)
            atomic_write_text(progress_path, progress.to_json())
    except OSError as e:
        raise write_error(manager.latest_path, e) from e
    return True

