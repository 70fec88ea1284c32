"""Work whose outcome may differ between ranks, done on rank 0 only, its outcome broadcast.

A cluster need not share a file system: README promises that checkpoints and results are
written by rank 0 only, so --output-directory only needs to exist on rank 0's host. So every
fact that can differ between ranks (is there a run to resume, its saved config, metadata and
weights, whether a file write worked) is read or done on rank 0, and every rank acts on what
rank 0 found. A rank that read its own disk could decide otherwise (start a fresh run while
rank 0 resumes), the ranks' collectives would no longer match, and Horovod would wait forever.

Rank 0's failure travels in the same broadcast: every rank raises the same error (for
hvd_trainer's input errors, the same one-paragraph error and exit code 2 from the CLI).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, TypeVar

from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.rank_errors import error_reported_by

T = TypeVar("T")


def run_on_coordinator(distributed: DistributedStrategy, name: str, fn: Callable[[], T]) -> T:
    """fn() on rank 0 only; its result on every rank, or its error raised on every rank.

    `name` names the broadcast and must be the same on every rank. Rank 0 raises its own
    exception (traceback intact); the others raise the same hvd_trainer error class and message,
    or RankFailedError for anything else.
    """
    error: Optional[BaseException] = None
    report: Optional[Dict[str, Any]] = None
    if distributed.is_coordinator():
        try:
            report = {"value": fn()}
        except Exception as e:  # noqa: BLE001 - every failure must reach the broadcast, or the others hang
            error, report = e, {"error": (type(e).__name__, str(e))}
    # Horovod: one broadcast carries rank 0's result or its error, so no rank acts on its own files.
    report = distributed.broadcast_object(report, name=name)
    if error is not None:
        raise error
    if "error" in report:
        raise error_reported_by(0, *report["error"])
    return report["value"]
