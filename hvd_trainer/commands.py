"""Subcommands that train, evaluate and predict (wired as they are implemented)."""
from __future__ import annotations

import argparse


def add_subcommands(sub) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from hvd_trainer.errors import HvdTrainerError

    raise HvdTrainerError(
        "The example job is not available yet in this version; run 'python -m hvd_trainer doctor' "
        "to check the installation."
    )
