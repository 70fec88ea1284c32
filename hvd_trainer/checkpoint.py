"""Checkpoints that survive a crash at any instant, and a manager for latest/best.

A checkpoint file is written to a temporary name in the same directory, flushed and fsynced,
then renamed over the old one (rename is atomic on POSIX), and the directory is fsynced. A
reader therefore sees either the previous complete file or the new complete file. Loading
uses torch.load(weights_only=True): a checkpoint can hold tensors, numbers, strings, lists
and dicts, but never code that runs on load.

With `background=True` the manager copies the state in memory (a snapshot the next steps
cannot change) and writes it from a thread while training goes on, in the order saved, at
most four files queued; `wait()` returns once all of them are on disk. The training loop then waits only
for the copy; the fsync, whose cost grows with the disk's unwritten data, happens off its path.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import io
import logging
import os
import pickle
import random
import socket
import threading
import zipfile
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Set

import numpy as np
import torch

from hvd_trainer.errors import CheckpointError
from hvd_trainer.run_layout import BEST_CHECKPOINT, LATEST_CHECKPOINT, PREVIOUS_CHECKPOINT

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1


def atomic_write_bytes(path: str, write_fn) -> None:
    """Call write_fn(fileobj) on a temp file next to `path`, then rename it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # Host and pid in the name: local rank 0 of several hosts may share one filesystem.
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{socket.gethostname()}.{os.getpid()}.tmp")
    _TEMP_FILES_IN_FLIGHT.add(tmp)
    try:
        with open(tmp, "wb") as fh:
            write_fn(fh)
            fh.flush()
            # The data must be on disk before the rename makes it "latest"; fdatasync skips the
            # inode's timestamps, which a reader does not need.
            (os.fdatasync if hasattr(os, "fdatasync") else os.fsync)(fh.fileno())
        os.replace(tmp, path)
    finally:
        _TEMP_FILES_IN_FLIGHT.discard(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_dir(directory)


#: Temporary files of writes under way (any thread): removed by remove_temp_files before a hard exit.
_TEMP_FILES_IN_FLIGHT: Set[str] = set()


def remove_temp_files() -> None:
    """Delete the temporary files of writes in flight (the process is about to quit without finishing them)."""
    for tmp in list(_TEMP_FILES_IN_FLIGHT):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def write_state(path: str, state: Dict[str, Any]) -> None:
    """torch.save `state` to `path` atomically (temp file, fdatasync, rename).

    Serialised in memory first: torch.save writing straight to a file turns a full disk into a
    RuntimeError about zip positions; a plain write reports ENOSPC as it is.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getbuffer()))


@contextlib.contextmanager
def directory_lock(directory: str) -> Iterator[None]:
    """An exclusive lock on `directory` itself, held while latest.ckpt is checked and replaced: rank 0's saves
    and the commits that surviving processes of an elastic job save by themselves (commit_checkpoint.py)
    replace it one at a time, so one's check for a newer file is not overtaken by another's write.
    Best effort: where the file system refuses locks on a directory (NFS may), the write goes on unlocked."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)  # releases the lock (so does the process's death)


def fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def rng_state() -> Dict[str, Any]:
    """This process's random generator states, in a weights_only-loadable form."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": torch.tensor(py_state[1], dtype=torch.int64),
                   "gauss": py_state[2] if py_state[2] is not None else None},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint_file(path: str, device: Optional[str] = "cpu") -> Dict[str, Any]:
    """Read a checkpoint safely, turning every way it can be broken into a CheckpointError."""
    if not os.path.exists(path):
        raise CheckpointError(f"The checkpoint {path} does not exist.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError) as e:
        raise CheckpointError(
            f"The checkpoint {path} is truncated or corrupt and cannot be read ({type(e).__name__}: {e})."
        ) from e
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"The file {path} is not an hvd_trainer checkpoint (format {FORMAT_VERSION}); it may come "
            "from another tool or version."
        )
    return state


class Checkpoint:
    """Model, optimizer, scheduler and extra state, saved and restored as one file.

    Only rank 0 writes. Ludwig lets every host's local rank 0 write, so that each host has a
    copy; on a shared filesystem those writers race on the same files (a 40-epoch run on the
    compose cluster lost previous.ckpt that way). hvd_trainer's resume never needs a copy on
    the other hosts: rank 0 reads the checkpoint and broadcasts weights, optimizer, scheduler
    and RNG states to every rank.
    """

    def __init__(self, distributed, model: torch.nn.Module, optimizer=None, scheduler=None, **extra):
        self.distributed = distributed
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.extra = extra  # objects with state_dict()/load_state_dict(), e.g. a GradScaler

    def state_dict(self, **meta) -> Dict[str, Any]:
        states = {"model": self.model.state_dict()}
        if self.optimizer is not None:
            states["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            states["scheduler"] = self.scheduler.state_dict()
        for name, obj in self.extra.items():
            if obj is not None:
                states[name] = obj.state_dict()
        return self.state_of(states, **meta)

    def state_of(self, states: Dict[str, Any], **meta) -> Dict[str, Any]:
        """The file's content from states taken earlier ({"model": ..., "optimizer": ..., "scheduler": ..., and
        the extra objects' names}, as state_dict() reads them from the live objects): an elastic commit held in
        memory is saved in the same format (commit_checkpoint.py). Objects this handle does not hold are left out."""
        objects = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler, **self.extra}
        held = {name for name, obj in objects.items() if obj is not None}
        state = {"format_version": FORMAT_VERSION, "meta": meta}
        state.update((name, value) for name, value in states.items() if name in held and value is not None)
        return state

    def extra_state_dicts(self) -> Dict[str, Any]:
        """The extra objects' states (a GradScaler's, say), for a broadcast from rank 0 on resume."""
        return {name: obj.state_dict() for name, obj in self.extra.items() if obj is not None}

    def load_extra_state_dicts(self, states: Dict[str, Any]) -> None:
        for name, state in states.items():
            if self.extra.get(name) is not None:
                self.extra[name].load_state_dict(state)

    def apply(self, state: Dict[str, Any], path: str, load_optimizer: bool = True) -> Dict[str, Any]:
        """Restore from a state already read from `path`; returns the saved meta dict."""
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"The checkpoint {path} does not fit this model: {str(e).splitlines()[0]} The model "
                "config must be the one the checkpoint was trained with."
            ) from e
        if load_optimizer:
            if self.optimizer is not None and "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None and "scheduler" in state:
                self.scheduler.load_state_dict(state["scheduler"])
            for name, obj in self.extra.items():
                if obj is not None and name in state:
                    obj.load_state_dict(state[name])
        return state.get("meta", {})




def snapshot(value: Any) -> Any:
    """A copy of a state dict that later in-place updates cannot reach: tensors are copied to
    the CPU and containers rebuilt (an optimizer's state_dict holds its live per-parameter
    dicts, which the next step() updates in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return type(value)((k, snapshot(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    return value


class BackgroundWriter:
    """Runs writes in order on a thread, without making the caller wait for the one before.

    One evaluation can save up to four files (best.ckpt, model_weights, latest.ckpt and
    training_progress.json); they queue behind each other. A fifth waits for room, which bounds
    the memory the snapshots hold. An error is raised by the next submit() or wait().
    """

    MAX_PENDING = 4

    def __init__(self):
        self._jobs: Deque[Callable[[], None]] = collections.deque()
        self._changed = threading.Condition()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def submit(self, write: Callable[[], None]) -> None:
        self._raise_error()
        with self._changed:
            while len(self._jobs) >= self.MAX_PENDING:
                self._changed.wait()
            self._jobs.append(write)
            if self._thread is None:
                # Not a daemon: an interpreter that exits while a write is queued finishes it first.
                self._thread = threading.Thread(target=self._drain, name="hvd_trainer-checkpoint-writer")
                self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._thread = None
                    self._changed.notify_all()
                    return
                write = self._jobs[0]
            try:
                write()
            except BaseException as e:  # handed to the training thread at its next submit() or wait()
                with self._changed:
                    self._error = self._error or e
            with self._changed:
                self._jobs.popleft()
                self._changed.notify_all()

    def wait(self) -> None:
        with self._changed:
            while self._thread is not None:
                self._changed.wait()
        self._raise_error()

    def _raise_error(self) -> None:
        with self._changed:
            error, self._error = self._error, None
        if error is not None:
            raise CheckpointError(f"Writing a checkpoint in the background failed: {error}") from error


def write_error(path: str, error: OSError) -> CheckpointError:
    """A failed write as one paragraph: what, why, that nothing older was lost, and what to do."""
    return CheckpointError(
        f"Could not write {path}: {error.strerror or error}. The checkpoint before it is intact (files are "
        "replaced only once the new one is complete). Free space on that filesystem or make it writable, or "
        "choose another --output-directory, then continue with --resume.")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


class CheckpointManager:
    """`latest.ckpt` (resume), `previous.ckpt` (the one before it) and `best.ckpt` in one directory.

    save() is a collective: every rank calls it, so that each rank's RNG states can be gathered
    into the file. Before latest is replaced, the old latest is hard-linked to previous, so a
    complete latest exists at every instant and, if latest is ever found corrupt (a disk that
    lied about fsync, a file copied by hand), the error can point at previous.
    """

    def __init__(self, checkpoint: Checkpoint, directory: str, distributed, background: bool = False):
        self.checkpoint = checkpoint
        self.directory = directory
        self.distributed = distributed
        self._writer = BackgroundWriter() if background else None

    @property
    def latest_path(self) -> str:
        return os.path.join(self.directory, LATEST_CHECKPOINT)

    @property
    def best_path(self) -> str:
        return os.path.join(self.directory, BEST_CHECKPOINT)

    @property
    def previous_path(self) -> str:
        return os.path.join(self.directory, PREVIOUS_CHECKPOINT)

    def _gathered_rng(self):
        states = [rng_state()]
        if self.distributed is not None and self.distributed.size() > 1:
            states = self.distributed.allgather_object(states[0], name="hvd_trainer.checkpoint_rng")
        return states

    def save(self, **meta) -> None:
        """Replace latest.ckpt (all ranks call, for the RNG gather; rank 0 writes)."""
        rng = self._gathered_rng()
        if self.distributed is not None and not self.distributed.is_coordinator():
            return
        self._write(self.latest_path, self.checkpoint.state_dict(rng_states=rng, **meta), rotate=True)

    def save_best(self, **meta) -> None:
        """Write best.ckpt (model, optimizer, scheduler); called on every rank, rank 0 writes."""
        if self.distributed is not None and not self.distributed.is_coordinator():
            return
        self._write(self.best_path, self.checkpoint.state_dict(**meta), rotate=False)

    def wait(self) -> None:
        """Return once every checkpoint saved so far is on disk (at once without background writes)."""
        if self._writer is not None:
            self._writer.wait()

    def save_file(self, path: str, state: Dict[str, Any]) -> None:
        """Write another file of the run (the model weights) the same way, in the same order (rank 0)."""
        self._write(path, state, rotate=False)

    def save_text(self, path: str, text: str) -> None:
        """Write a small text file (training_progress.json) in the same order as the checkpoints (rank 0).

        Queued too, not written at once: its fsync would otherwise wait in the training loop for the
        checkpoint data being written (ext4 commits every file's pending data with its journal).
        """
        def write() -> None:
            try:
                atomic_write_text(path, text)
            except OSError as e:
                raise write_error(path, e) from e

        if self._writer is None:
            write()
        else:
            self._writer.submit(write)

    def _write(self, path: str, state: Dict[str, Any], rotate: bool) -> None:
        def write() -> None:
            try:
                if rotate:
                    with directory_lock(self.directory):
                        self.rotate_previous()
                        write_state(path, state)
                else:
                    write_state(path, state)
            except OSError as e:
                raise write_error(path, e) from e

        if self._writer is None:
            write()
        else:
            state = snapshot(state)
            self._writer.submit(write)

    def rotate_previous(self) -> None:
        """The current latest.ckpt becomes previous.ckpt (a hard link), before latest is replaced.

        Safe when another process does the same at the same time on a shared disk (the surviving
        processes of an elastic job, commit_checkpoint.py): every name made here is this process's own,
        and previous.ckpt only ever changes by a rename.
        """
        if not os.path.exists(self.latest_path):
            return
        mine = f"{self.previous_path}.{socket.gethostname()}.{os.getpid()}"
        superseded = None
        try:
            # Freeing a large file's blocks takes tens of milliseconds: move the old previous
            # aside (a cheap rename) and delete it off the critical path.
            os.replace(self.previous_path, mine + ".old")
            superseded = mine + ".old"
        except FileNotFoundError:
            pass
        if os.path.lexists(mine + ".link"):
            os.unlink(mine + ".link")
        os.link(self.latest_path, mine + ".link")
        os.replace(mine + ".link", self.previous_path)
        if superseded:
            threading.Thread(target=_unlink_quietly, args=(superseded,), daemon=True).start()

    def read_latest(self, device: Optional[str] = "cpu") -> Dict[str, Any]:
        """The latest checkpoint's content, read safely; a broken file's error names previous.ckpt."""
        self.wait()
        try:
            return load_checkpoint_file(self.latest_path, device)
        except CheckpointError as e:
            if os.path.exists(self.previous_path):
                raise CheckpointError(
                    f"{e} An older checkpoint exists at {self.previous_path}: to resume from it, move "
                    f"the broken file away and copy it over {self.latest_path} (the run then repeats the "
                    "steps since that checkpoint)."
                ) from e
            raise
