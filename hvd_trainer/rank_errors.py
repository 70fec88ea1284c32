"""Errors that happen on one rank only, made every rank's error at the next agreement.

A rank that raised alone would leave the others waiting in their next collective forever
(Horovod has no timeout). So code that can fail on some ranks only (rank 0's file writes,
callbacks that run on the coordinator) records its failure here instead of raising, and the
ranks learn of it at the next agreement: every control agreement (about a second of training
apart, and before each evaluation), the vote after each evaluation, and the end of train().
There every rank raises the same error, that of the lowest failing rank: that rank its own
exception, traceback intact; the others the same hvd_trainer error class and message (a
one-paragraph error, exit code 2 from the CLI), or RankFailedError for anything else (a crash).
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

from hvd_trainer import errors
from hvd_trainer.distributed.base import DistributedStrategy

logger = logging.getLogger(__name__)


class RankFailedError(RuntimeError):
    """Another rank failed with an error that is not one of hvd_trainer's input errors (a bug, a crash)."""


class DeferredErrors:
    """The first error this rank met in code that other ranks may not run; raised where all ranks agree."""

    def __init__(self, distributed: DistributedStrategy):
        self.distributed = distributed
        self.first: Optional[BaseException] = None

    @property
    def failed(self) -> bool:
        return self.first is not None

    def record(self, error: BaseException) -> None:
        if self.first is None:
            self.first = error
            logger.error("Rank %d failed: %s: %s (every rank stops at the next agreement).",
                         self.distributed.rank(), type(error).__name__, error)

    def __enter__(self) -> "DeferredErrors":
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """`with errors:` records what the block raises, unless there is no other rank to wait (one process)."""
        if error is None or not isinstance(error, Exception) or self.distributed.size() == 1:
            return False
        if self.distributed.is_membership_change(error):
            return False  # elastic training: every rank meets it now, and Horovod's elastic run handles it
        self.record(error)
        return True

    def check(self) -> None:
        """One collective: every rank raises the same error when any rank recorded one."""
        if self.distributed.size() == 1:
            if self.first is not None:
                raise self.first
            return
        if self.distributed.any_rank(self.failed):
            self.raise_agreed()

    def raise_agreed(self) -> None:
        """Called on every rank once an agreement showed a failure: gather the reports, raise the same error."""
        reports = self.distributed.allgather_object(self._report(), name="hvd_trainer.rank_errors")
        rank, (kind, message) = next((r, report) for r, report in enumerate(reports) if report is not None)
        if rank == self.distributed.rank():
            raise self.first
        raise error_reported_by(rank, kind, message)

    def _report(self) -> Optional[Tuple[str, str]]:
        return None if self.first is None else (type(self.first).__name__, str(self.first))


def error_reported_by(rank: int, kind: str, message: str) -> Exception:
    """The error to raise for another rank's (class name, message): the same hvd_trainer error
    (one paragraph, exit code 2 from the CLI), or RankFailedError for anything else."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, errors.HvdTrainerError):
        return cls(message)
    return RankFailedError(f"Rank {rank} failed with {kind}: {message} Every rank stops here; rank {rank}'s "
                           "output has the traceback.")
