"""What the coordinator shows and records: TensorBoard scalars and the metrics table.

Other ranks get NullSummaryWriter, whose methods do nothing, so the loop never branches on rank
to log (and never opens an event file, which would be written from every rank).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional

import torch

from hvd_trainer.run_layout import split_log_dir

#: The pseudo-feature of the total loss (hvd_trainer.models.batch_metrics.COMBINED).
COMBINED = "combined"

SPLITS = ("training", "validation", "test")


class NullSummaryWriter:
    def add_scalars(self, *args, **kwargs) -> None:
        pass

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def create_summary_writers(log_dir: str, enabled: bool) -> Dict[str, object]:
    """{split: writer} under log_dir/<split>: TensorBoard event files, or no-op writers when not enabled."""
    if not enabled:
        return {split: NullSummaryWriter() for split in SPLITS}
    from hvd_trainer.event_file import EventFile

    return {split: EventFile(split_log_dir(log_dir, split)) for split in SPLITS}


def write_step_summary(writer, combined_loss: float, all_losses: Mapping[str, torch.Tensor], step: int,
                       learning_rate: Optional[float] = None) -> None:
    """The seed's per-step tags: combined/step_training_loss, {feature}/step_training_loss, combined/step_learning_rate.

    All of a step's scalars go into one event (one record and two checksums instead of three);
    readers see the same tags.
    """
    if writer is None or isinstance(writer, NullSummaryWriter):
        return
    scalars = [("combined/step_training_loss", combined_loss)]
    for feature, loss in all_losses.items():
        scalars.append((f"{feature}/step_training_loss", float(loss.detach().float())))
    if learning_rate is not None:
        scalars.append(("combined/step_learning_rate", learning_rate))
    writer.add_scalars(scalars, step)


def write_eval_summary(writer, metrics: Mapping[str, Mapping[str, float]], step: int) -> None:
    """The seed's per-evaluation tags: {feature}/epoch_{metric}."""
    if writer is None or isinstance(writer, NullSummaryWriter):
        return
    for feature, values in metrics.items():
        for name, value in values.items():
            writer.add_scalar(f"{feature}/epoch_{name}", value, global_step=step)
    writer.flush()


def format_metrics_table(split_metrics: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """One table per output feature (and `combined` where there are several): rows are metrics, columns the
    splits that were evaluated."""
    splits = [s for s in SPLITS if split_metrics.get(s)]
    if not splits:
        return ""
    features = []
    for s in splits:
        for f in split_metrics[s]:
            if f not in features:
                features.append(f)
    if len(features) == 2 and COMBINED in features:
        # One output feature: `combined` repeats its loss, a second table saying nothing new.
        features.remove(COMBINED)
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
