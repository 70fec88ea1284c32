"""TensorBoard event files written by hvd_trainer: TensorBoard's own reader accepts them."""
import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_crc

from hvd_trainer import event_file
from hvd_trainer.event_file import EventFile
from hvd_trainer.summary import create_summary_writers, write_eval_summary, write_step_summary


def read_scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()  # TensorBoard's reader checks both checksums of every record, and drops bad ones
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("length", [0, 1, 7, 8, 12, 100, 1000, 4096])
def test_checksum_equals_tensorboards(monkeypatch, native, length):
    if native and event_file._crc32c is None:
        pytest.skip("google-crc32c has no C implementation here")
    if not native:
        monkeypatch.setattr(event_file, "_crc32c", None)
    data = os.urandom(length)
    assert event_file.masked_crc32c(data) == tensorboard_crc(data)


def test_step_and_evaluation_scalars_read_back(tmp_path):
    import torch

    writers = create_summary_writers(str(tmp_path), enabled=True)
    for step in range(1, 6):
        write_step_summary(writers["training"], 1.0 / step, {"y": torch.tensor(2.0 * step)}, step, 0.01 * step)
    write_eval_summary(writers["validation"], {"y": {"accuracy": 0.75}, "combined": {"loss": 0.5}}, 5)
    for w in writers.values():
        w.close()
    training = read_scalars(tmp_path / "training")
    assert [s for s, _ in training["combined/step_training_loss"]] == [1, 2, 3, 4, 5]
    assert [v for _, v in training["combined/step_training_loss"]] == pytest.approx([1.0 / s for s in range(1, 6)])
    assert [v for _, v in training["y/step_training_loss"]] == pytest.approx([2.0 * s for s in range(1, 6)])
    assert [v for _, v in training["combined/step_learning_rate"]] == pytest.approx([0.01 * s for s in range(1, 6)])
    assert read_scalars(tmp_path / "validation") == {"y/epoch_accuracy": [(5, 0.75)], "combined/epoch_loss": [(5, 0.5)]}
    assert read_scalars(tmp_path / "test") == {}


def test_events_are_buffered_until_flush_then_on_disk(tmp_path):
    f = EventFile(str(tmp_path))
    size = os.path.getsize(f.path)  # the file-version event is written at once
    f.add_scalars([("a", 1.0)], step=1)
    assert os.path.getsize(f.path) == size
    f.flush()
    assert os.path.getsize(f.path) > size
    assert read_scalars(tmp_path) == {"a": [(1, 1.0)]}  # readable while the file is still open
    f.close()


def test_buffer_is_written_after_flush_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(EventFile, "FLUSH_SECONDS", 0.0)
    f = EventFile(str(tmp_path))
    size = os.path.getsize(f.path)
    f.add_scalar("a", 2.0, global_step=3)
    assert os.path.getsize(f.path) > size
    f.close()
    assert read_scalars(tmp_path) == {"a": [(3, 2.0)]}


def test_bad_checksums_would_be_dropped_by_the_reader(tmp_path, monkeypatch):
    """The read-back tests above can fail: TensorBoard drops records whose checksum is wrong."""
    monkeypatch.setattr(event_file, "masked_crc32c", lambda data: 12345)
    f = EventFile(str(tmp_path))
    f.add_scalars([("a", 1.0)], step=1)
    f.close()
    assert read_scalars(tmp_path) == {}


def test_a_write_that_fails_stops_logging_without_raising(tmp_path, caplog):
    """Rank 0 alone writes event files: a full disk must not raise there while the other ranks train on."""
    writer = EventFile(str(tmp_path))

    class FullDisk:
        closed = False

        def write(self, data):
            raise OSError(28, "No space left on device")

        def flush(self):
            pass

        def close(self):
            self.closed = True

    writer._file = FullDisk()
    writer.add_scalars([("combined/step_training_loss", 1.0)], step=1)
    writer.flush()
    writer.add_scalars([("combined/step_training_loss", 2.0)], step=2)
    writer.close()
    assert "TensorBoard logging stopped" in caplog.text and "No space left on device" in caplog.text
    assert caplog.text.count("TensorBoard logging stopped") == 1


def test_a_log_directory_that_cannot_be_created_disables_logging(tmp_path, caplog):
    (tmp_path / "a_file").write_text("")
    writer = EventFile(str(tmp_path / "a_file" / "logs"))
    writer.add_scalar("x", 1.0, 1)
    writer.close()
    assert "TensorBoard logging stopped" in caplog.text


@pytest.mark.parametrize("scalars, step, wall_time", [
    ([("combined/step_training_loss", 0.25)], 1, 1.5),
    ([("a", 0.0), ("t" * 200, -2.5), ("é/ü", float("nan")), ("inf", float("inf"))], 0, 0.0),
    ([("big", 1e40), ("-big", -1e40), ("tiny", 1e-50)], 2 ** 40, 1.7e9),
    ([], 5, 3.0),
    ([("negative step", 1.0)], -3, 2.0),
])
def test_hand_encoded_scalar_event_has_protobufs_bytes(scalars, step, wall_time):
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in scalars])
    expected = Event(wall_time=wall_time, step=step, summary=summary).SerializeToString()
    assert event_file.scalar_event(scalars, step, wall_time) == expected


def test_events_keep_their_order_across_flushes(tmp_path, monkeypatch):
    """Steps wait unencoded until a flush, other events are serialized at once: the file has them in the order added."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    monkeypatch.setattr(EventFile, "FLUSH_EVENTS", 3)
    f = EventFile(str(tmp_path))
    for step in range(1, 8):
        f.add_scalars([("a", float(step))], step)
        f.add_event(Event(step=step, summary=Summary(value=[Summary.Value(tag="b", simple_value=-step)])))
    f.close()
    events = [e for e in LegacyEventFileLoader(f.path).Load() if e.HasField("summary")]
    assert [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value] == [
        (s, tag, sign * s) for s in range(1, 8) for tag, sign in (("a", 1.0), ("b", -1.0))]


def test_a_scalar_that_is_not_a_number_drops_its_event_at_flush_without_raising(tmp_path, caplog):
    """Events are encoded at flush, on rank 0 alone: a bad value there must not raise into the evaluation."""
    import numpy as np
    import torch

    f = EventFile(str(tmp_path))
    f.add_scalars([("a", 1.0)], step=1)
    f.add_scalars([("a", "not a number")], step=2)
    f.add_scalars([("a", np.float32(3.0)), ("t", torch.tensor(4.0))], step=3)
    f.close()
    assert read_scalars(tmp_path) == {"a": [(1, 1.0), (3, 3.0)], "t": [(3, 4.0)]}
    assert "step 2 was dropped" in caplog.text
