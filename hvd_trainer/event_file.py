"""TensorBoard event files, written by the training loop's own thread in batches.

torch's SummaryWriter hands every event to a writer thread through a queue of ten; that
thread frames the event and checksums it twice (CRC32C, in pure Python without TensorFlow)
before a file write. The handoff and the thread's Python work take the GIL from the training
loop for ~65 us per event here: 10-16% of a small MLP's training loop at np=1 with one event
per step (interleaved runs with and without logging; 2-6% with this writer). EventFile frames
each event where it is added (a few microseconds with google-crc32c's C checksum), keeps the
bytes in memory and writes them every FLUSH_SECONDS, at flush() (every evaluation) and at
close(). The file is the same TFRecord stream of Event protos that TensorBoard reads.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import struct
import time
from typing import BinaryIO, Iterable, Optional, Tuple

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary

logger = logging.getLogger(__name__)

_MASK = 0xFFFFFFFF
_MASK_DELTA = 0xA282EAD8  # TFRecord's checksum masking
_file_counter = itertools.count()


def _native_crc32c():
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.value if google_crc32c.implementation == "c" else None


_crc32c = _native_crc32c()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of `data` (C when google-crc32c is installed, else TensorBoard's Python)."""
    if _crc32c is None:
        from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as python_masked_crc32c

        return python_masked_crc32c(data)
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & _MASK) + _MASK_DELTA) & _MASK


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, its checksum, the data, its checksum."""
    header = struct.pack("<Q", len(data))
    return b"".join((header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data))))


class EventFile:
    """An append-only TensorBoard event file in `log_dir` (created if needed).

    Only rank 0 writes event files, so a write that fails there (a full disk) must not raise: the
    other ranks would wait for it in their next collective. Logs are not the run's state, so the
    file logs the error once and stops writing; training and its checkpoints go on.
    """

    #: Buffered events reach the file at least this often (SummaryWriter's default is 120 s).
    FLUSH_SECONDS = 5.0
    #: ...or sooner, once this many bytes are buffered (about 10,000 step events).
    FLUSH_BYTES = 1 << 20

    def __init__(self, log_dir: str):
        # TensorBoard finds event files by "tfevents" in the name; the rest keeps names unique.
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        self.path = os.path.join(log_dir, name)
        self._buffer = bytearray()
        self._file: Optional[BinaryIO] = None
        try:
            os.makedirs(log_dir, exist_ok=True)
            self._file = open(self.path, "wb")
        except OSError as e:
            self._give_up(e)
        self._next_flush = time.monotonic() + self.FLUSH_SECONDS
        self.add_event(Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def add_scalars(self, scalars: Iterable[Tuple[str, float]], step: int, wall_time: Optional[float] = None) -> None:
        """Several scalars of one step in one event."""
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in scalars])
        self.add_event(Event(wall_time=time.time() if wall_time is None else wall_time, step=int(step), summary=summary))

    def add_scalar(self, tag: str, value: float, global_step: int = 0, walltime: Optional[float] = None) -> None:
        """SummaryWriter.add_scalar's signature, for one scalar."""
        self.add_scalars(((tag, float(value)),), global_step, walltime)

    def add_event(self, event: Event) -> None:
        if self._file is None:
            return
        self._buffer += tfrecord(event.SerializeToString())
        if len(self._buffer) >= self.FLUSH_BYTES or time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events and hand them to the OS (no fsync: logs are not checkpoints)."""
        if self._file is None or self._file.closed:
            return
        try:
            if self._buffer:
                self._file.write(self._buffer)
                self._buffer.clear()
            self._file.flush()
        except OSError as e:
            self._give_up(e)
            return
        self._next_flush = time.monotonic() + self.FLUSH_SECONDS

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()

    def _give_up(self, error: OSError) -> None:
        logger.error("TensorBoard logging stopped: %s cannot be written (%s). Training and its checkpoints go on; "
                     "free space there to get logs in the next run.", self.path, error.strerror or error)
        self._buffer.clear()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
