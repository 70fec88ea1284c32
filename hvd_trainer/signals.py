"""Stop requests from signals, turned into one decision that every rank shares.

SIGINT (Ctrl-C): the first finishes the current step, saves a checkpoint and ends training
normally (exit 0); the second quits at once (exit 1), as in Ludwig.
SIGTERM and SIGUSR1 (SLURM sends them before a time limit or preemption): save a checkpoint
and exit with EXIT_REQUEUE, which tells a batch script to requeue the job.

A signal may reach only some ranks. Handlers only set a flag; the training loop folds the
flag into a small allreduce (max) that every rank submits at every optimizer step, so all
ranks see the request at the same step and stop together.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable, Dict, Optional

logger = logging.getLogger(__name__)

EXIT_OK = 0
#: "Checkpoint saved after SIGTERM/SIGUSR1; requeue me" (EX_TEMPFAIL from sysexits.h).
EXIT_REQUEUE = 75
EXIT_SECOND_SIGINT = 1

NO_STOP = 0
STOP_SIGINT = 1
STOP_PREEMPT = 2

STOP_REASONS = {NO_STOP: None, STOP_SIGINT: "sigint", STOP_PREEMPT: "preempt"}


class StopSignals:
    """Installs the handlers for the duration of training (main thread only)."""

    def __init__(self, on_quit: Optional[Callable[[], None]] = None):
        #: Run before a second SIGINT quits the process (removes half-written checkpoint files).
        self.on_quit = on_quit
        self.requested = NO_STOP
        self.sigint_count = 0
        self._previous: Dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig, handler in ((signal.SIGINT, self._on_sigint), (signal.SIGTERM, self._on_preempt),
                             (signal.SIGUSR1, self._on_preempt)):
            self._previous[sig] = signal.signal(sig, handler)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_sigint(self, signum, frame) -> None:
        self.sigint_count += 1
        if self.sigint_count == 1:
            self.requested = max(self.requested, STOP_SIGINT)
            logger.critical("\nReceived SIGINT: training will finish the current step, save a checkpoint "
                            "and stop. Send another SIGINT to quit at once.")
            return
        logger.critical("\nReceived a second SIGINT: quitting now.")
        self.uninstall()
        if self.on_quit is not None:
            self.on_quit()
        os._exit(EXIT_SECOND_SIGINT)

    def _on_preempt(self, signum, frame) -> None:
        self.requested = STOP_PREEMPT
        logger.critical(f"\nReceived {signal.Signals(signum).name}: stopping at the end of this step with a "
                        f"checkpoint, then exiting with code {EXIT_REQUEUE} so the job can be requeued (with "
                        f"skip_save_progress: no checkpoint, and code {EXIT_STOPPED_UNSAVED}, no requeue).")


#: Stopped by SIGTERM/SIGUSR1 with skip_save_progress: no checkpoint, so a requeue would start over.
PREEMPTED_UNSAVED = "preempt_unsaved"
#: ...and the exit status then: a failure that a batch script does not requeue (75 would loop forever).
EXIT_STOPPED_UNSAVED = 1


def exit_code_for(reason: Optional[str]) -> int:
    if reason == "preempt":
        return EXIT_REQUEUE
    return EXIT_STOPPED_UNSAVED if reason == PREEMPTED_UNSAVED else EXIT_OK
