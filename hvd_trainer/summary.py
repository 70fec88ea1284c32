"""What the coordinator shows and records: TensorBoard scalars and the metrics table.

Other ranks get NullSummaryWriter, whose methods do nothing, so the loop never branches on rank
to log (and never builds a SummaryWriter, which would write event files from every rank).
"""
from __future__ import annotations

import logging
import math
import os
from typing import Dict, Mapping, Optional

import torch

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")


class NullSummaryWriter:
    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_summary_writers(log_dir: str, enabled: bool) -> Dict[str, object]:
    """{split: writer} under log_dir/<split>; no-op writers when not enabled."""
    if not enabled:
        return {split: NullSummaryWriter() for split in SPLITS}
    from torch.utils.tensorboard import SummaryWriter

    from hvd_trainer.event_crc import use_native_crc32c

    use_native_crc32c()

    return {split: SummaryWriter(os.path.join(log_dir, split)) for split in SPLITS}


def write_step_summary(writer, combined_loss: float, all_losses: Mapping[str, torch.Tensor], step: int,
                       learning_rate: Optional[float] = None) -> None:
    """The seed's per-step tags: combined/step_training_loss, {feature}/step_training_loss, combined/step_learning_rate.

    All of a step's scalars go into one event: every event costs the writer a record, a flush
    check and two checksums (pure Python unless google-crc32c is installed: ~70 us of GIL time
    per event, see event_crc), so one event per step instead of one per scalar; readers see
    the same tags.
    """
    if writer is None or isinstance(writer, NullSummaryWriter):
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag="combined/step_training_loss", simple_value=combined_loss)]
    for feature, loss in all_losses.items():
        values.append(Summary.Value(tag=f"{feature}/step_training_loss", simple_value=float(loss.detach().float())))
    if learning_rate is not None:
        values.append(Summary.Value(tag="combined/step_learning_rate", simple_value=learning_rate))
    # torch's SummaryWriter has no public call for several scalars in one event of one directory
    # (add_scalars writes a directory per tag); add_scalar itself goes through this file writer.
    writer._get_file_writer().add_summary(Summary(value=values), step)


def write_eval_summary(writer, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
    """The seed's per-evaluation tags: {feature}/epoch_{metric}."""
    if writer is None or isinstance(writer, NullSummaryWriter):
        return
    for feature, values in metrics.items():
        for name, value in values.items():
            writer.add_scalar(f"{feature}/epoch_{name}", value, global_step=step)
    writer.flush()


def format_metrics_table(split_metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """One table per output feature: rows are metrics, columns the splits that were evaluated."""
    splits = [s for s in SPLITS if split_metrics.get(s)]
    if not splits:
        return ""
    features = []
    for s in splits:
        for f in split_metrics[s]:
            if f not in features:
                features.append(f)
    blocks = []
    for feature in features:
        names = []
        for s in splits:
            for n in split_metrics[s].get(feature, {}):
                if n not in names:
                    names.append(n)
        rows = [[n] + [_fmt(split_metrics[s].get(feature, {}).get(n)) for s in splits] for n in names]
        header = [feature] + splits
        widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
        line = lambda cells: "│ " + " │ ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " │"  # noqa: E731
        rule = "├─" + "─┼─".join("─" * w for w in widths) + "─┤"
        blocks.append("\n".join([line(header), rule] + [line(r) for r in rows]))
    return "\n".join(blocks)


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    return f"{value:.4f}"
