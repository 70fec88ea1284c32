"""TensorBoard event files, written by the training loop's own thread in batches.

torch's SummaryWriter hands every event to a writer thread through a queue of ten; that
thread frames the event and checksums it twice (CRC32C, in pure Python without TensorFlow)
before a file write. The handoff and the thread's Python work take the GIL from the training
loop for ~65 us per event here: 10-16% of a small MLP's training loop at np=1 with one event
per step. EventFile instead keeps each step's scalars as they are (a tuple appended to a list)
and encodes, frames (google-crc32c's C checksum) and writes them in one go every FLUSH_SECONDS,
at flush() (every evaluation) and at close(). The file is the same TFRecord stream of Event
protos that TensorBoard reads.

Why deferred, and why encoded by hand (`scalar_event`) rather than as protobuf objects: in the
training process, building and serializing a step's Event cost ~50 us per step (6% of a small
MLP's step at np=1, in alternating CLI runs), ten times what the same calls take in a quiet
microbenchmark, and encoding each event by hand right away still cost ~25 us a step. The bytes
are the ones protobuf writes for the same message (tests/test_event_file.py compares them).
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import struct
import time
from typing import BinaryIO, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from tensorboard.compat.proto.event_pb2 import Event

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


def _varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative integer."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field_key: bytes, payload: bytes) -> bytes:
    return field_key + _varint(len(payload)) + payload


#: Summary.Value's `tag` field (1) with its bytes, per tag: a run logs the same few tags every step.
_tag_fields: Dict[str, bytes] = {}


def _float32(value: float) -> bytes:
    """`value` as protobuf's float field stores it (a double beyond float32's range becomes +-inf, as protobuf does)."""
    value = float(value)
    try:
        return struct.pack("<f", value)
    except OverflowError:
        return struct.pack("<f", math.copysign(math.inf, value))


def scalar_event(scalars: Iterable[Tuple[str, float]], step: int, wall_time: float) -> bytes:
    """The serialized Event{wall_time, step, summary{value[tag, simple_value]...}}.

    Field keys: Event.wall_time 1 (fixed64), Event.step 2 (varint), Event.summary 5 (message);
    Summary.value 1 (message); Summary.Value.tag 1 (string), Summary.Value.simple_value 2 (fixed32).
    Protobuf leaves out a zero wall_time and step (proto3 defaults), so this does too.
    """
    values = []
    for tag, value in scalars:
        tag_field = _tag_fields.get(tag)
        if tag_field is None:
            tag_field = _tag_fields[tag] = _length_delimited(b"\x0a", tag.encode("utf-8"))
        values.append(_length_delimited(b"\x0a", tag_field + b"\x15" + _float32(value)))
    head = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    if step:
        head += b"\x10" + _varint(step & 0xFFFFFFFFFFFFFFFF)  # int64: a negative step is ten bytes of two's complement
    return head + _length_delimited(b"\x2a", b"".join(values))


class EventFile:
    """An append-only TensorBoard event file in `log_dir` (created if needed).

    Only rank 0 writes event files, so a write that fails there (a full disk) must not raise: the
    other ranks would wait for it in their next collective. Logs are not the run's state, so the
    file logs the error once and stops writing; training and its checkpoints go on.
    """

    #: Buffered events reach the file at least this often (SummaryWriter's default is 120 s).
    FLUSH_SECONDS = 5.0
    #: ...or sooner, once this many events wait (about 1 MB of records).
    FLUSH_EVENTS = 10_000

    def __init__(self, log_dir: str):
        # TensorBoard finds event files by "tfevents" in the name; the rest keeps names unique.
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        self.path = os.path.join(log_dir, name)
        #: Events not yet written: serialized (bytes), or a step's (scalars, step, wall_time) to encode at flush.
        self._pending: List[Union[bytes, Tuple[Sequence[Tuple[str, float]], int, float]]] = []
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
        if self._file is not None:
            if not isinstance(scalars, (list, tuple)):
                scalars = list(scalars)
            self._add((scalars, int(step), time.time() if wall_time is None else wall_time))

    def add_scalar(self, tag: str, value: float, global_step: int = 0, walltime: Optional[float] = None) -> None:
        """SummaryWriter.add_scalar's signature, for one scalar."""
        self.add_scalars(((tag, float(value)),), global_step, walltime)

    def add_event(self, event: Event) -> None:
        if self._file is not None:
            self._add(event.SerializeToString())

    def _add(self, event) -> None:
        self._pending.append(event)
        if len(self._pending) >= self.FLUSH_EVENTS or time.monotonic() >= self._next_flush:
            self.flush()

    def flush(self) -> None:
        """Write the buffered events and hand them to the OS (no fsync: logs are not checkpoints)."""
        if self._file is None or self._file.closed:
            return
        pending, self._pending = self._pending, []
        try:
            if pending:
                self._file.write(b"".join(self._record(e) for e in pending))
            self._file.flush()
        except OSError as e:
            self._give_up(e)
            return
        self._next_flush = time.monotonic() + self.FLUSH_SECONDS

    def _record(self, event) -> bytes:
        """One pending event as a TFRecord; a scalar that is not a number is dropped with an error, not raised:
        only rank 0 writes logs, and an exception there would leave the other ranks waiting in a collective."""
        if isinstance(event, bytes):
            return tfrecord(event)
        try:
            return tfrecord(scalar_event(*event))
        except (TypeError, ValueError) as e:
            logger.error("A TensorBoard event of step %s was dropped: its scalars %r are not all numbers (%s).",
                         event[1], event[0], e)
            return b""

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()

    def _give_up(self, error: OSError) -> None:
        logger.error("TensorBoard logging stopped: %s cannot be written (%s). Training and its checkpoints go on; "
                     "free space there to get logs in the next run.", self.path, error.strerror or error)
        self._pending.clear()
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
        self._file = None
