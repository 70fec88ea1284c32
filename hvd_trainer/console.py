"""What rank 0 prints while it trains: one line per evaluation, under the progress bar.

    step 40/400 epoch 4 | train loss 0.0532 | val loss 0.0560 accuracy 0.9826 hits_at_k 1.0000 | test loss 0.1040 | best 0.0491 at step 30

The line shows the validation field (the output feature, or `combined`, that decides the best
model): the watched metric on the training and test splits, every metric on the validation
split, and what the evaluation meant (a new best, saved; or the best so far). The full table of
every feature and split goes to the debug log (`--log-level debug`) and to TensorBoard; the
train command prints the best checkpoint's table at the end. The progress bar is cleared while
a line is written and drawn again under it, so that bar and lines never share a line.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Mapping, Optional

from hvd_trainer.summary import format_metrics_table

logger = logging.getLogger(__name__)

#: Split -> its name on the line.
SHORT_SPLITS = {"training": "train", "validation": "val", "test": "test"}


def evaluation_line(pt, total_steps: int, tables: Mapping[str, Mapping[str, Mapping[str, float]]], field: str,
                    metric: str, improved: Optional[bool] = None) -> str:
    """The one line of an evaluation (see the module's docstring).

    improved: whether this evaluation made a new best model (None: no validation set, nothing judged).
    """
    parts = [f"step {pt.steps}/{total_steps} epoch {pt.epoch}"]
    for split, short in SHORT_SPLITS.items():
        values = tables.get(split, {}).get(field, {})
        shown = values if split == "validation" else {m: v for m, v in values.items() if m == metric}
        if shown:
            parts.append(short + " " + " ".join(f"{m} {_number(v)}" for m, v in shown.items()))
    if improved is not None:
        parts.append("new best, saved" if improved else
                     f"best {_number(pt.best_eval_metric_value)} at step {pt.best_eval_metric_steps}")
    return " | ".join(parts)


def report_evaluation(session, field: str, metric: str, verdict: Any = None) -> None:
    """Rank 0: the evaluation's line (and at debug level its full table), then why training stops, if it does."""
    tables = session.last_evaluation or {}
    pt = session.progress_tracker
    with bar_cleared(session.progress_bar):
        logger.info("%s", evaluation_line(pt, session.schedule.total_steps, tables, field, metric,
                                          None if verdict is None else verdict.improved))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", format_metrics_table(tables))
        if verdict is not None and verdict.should_stop:
            logger.info("Early stopping: %s.", verdict.reason)


@contextlib.contextmanager
def bar_cleared(progress_bar: Optional[Any]) -> Iterator[None]:
    """The tqdm bar off the screen while lines are written, then drawn again below them."""
    if progress_bar is None:
        yield
        return
    progress_bar.clear()
    try:
        yield
    finally:
        progress_bar.refresh()


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and abs(value) < 1e4 else f"{value:.4g}"
