"""TensorBoard event checksums computed in C: the same values, and files TensorBoard reads back."""
import os

import pytest

pytest.importorskip("google_crc32c")

from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_crc  # noqa: E402

from hvd_trainer import event_crc  # noqa: E402


@pytest.mark.parametrize("length", [0, 1, 7, 8, 12, 100, 1000, 4096])
def test_native_checksum_equals_tensorboards(length):
    data = os.urandom(length)
    assert event_crc.masked_crc32c(data) == tensorboard_crc(data)


def test_events_written_with_it_read_back_with_tensorboards_checks(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.summary.writer import record_writer

    from hvd_trainer.summary import create_summary_writers, write_step_summary

    writers = create_summary_writers(str(tmp_path), enabled=True)
    assert record_writer.masked_crc32c is event_crc.masked_crc32c
    for step in range(1, 6):
        write_step_summary(writers["training"], 1.0 / step, {}, step, 0.01)
    for w in writers.values():
        w.close()
    acc = EventAccumulator(str(tmp_path / "training"))
    acc.Reload()  # TensorBoard's reader verifies both checksums of every record
    losses = [e.value for e in acc.Scalars("combined/step_training_loss")]
    assert losses == pytest.approx([1.0 / s for s in range(1, 6)])
