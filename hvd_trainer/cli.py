"""Command line: python -m hvd_trainer [train|evaluate|predict|tune-batch-size|doctor|visualize].

With no subcommand it runs the built-in example job. Errors caused by input (config, data,
checkpoint, launch) are printed as one paragraph without a traceback, on every rank that hit
them, and the process exits with status 2 (EXIT_INPUT_ERROR).
"""
from __future__ import annotations

import logging
import sys
from typing import List, Optional

from hvd_trainer.errors import EXIT_INPUT_ERROR, HvdTrainerError
from hvd_trainer.options import build_parser, parse_run_options

__all__ = ["build_parser", "main", "setup_logging"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
QUIET_LIBRARIES = ("matplotlib", "PIL")


def setup_logging(level: str, rank: int = 0) -> None:
    """Messages only, on stderr; ranks other than 0 show warnings and above unless debugging."""
    if rank != 0 and level != "debug":
        level = "warning"
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(message)s", stream=sys.stderr)
    # Libraries' chatter is not the run's news: matplotlib's "generated new fontManager" (info) and its font
    # cache warnings on a fresh machine, PIL's plugin loading (debug).
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse_run_options(argv)
    from hvd_trainer.distributed.launcher import detect_launcher

    setup_logging(options.log_level, detect_launcher().rank or 0)
    try:
        from hvd_trainer.commands import run_command

        return run_command(options.command)
    except HvdTrainerError as e:
        print(f"hvd_trainer: error: {e}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("hvd_trainer: interrupted.", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
