"""Command line: python -m hvd_trainer [train|evaluate|predict|tune-batch-size|doctor|visualize].

With no subcommand it runs the built-in example job. Errors caused by input (config, data,
checkpoint, launch) are printed as one paragraph without a traceback, on every rank that hit
them, and the process exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from hvd_trainer.errors import HvdTrainerError

EXIT_INPUT_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hvd_trainer",
        description="Data-parallel PyTorch training on Horovod. Run under horovodrun, mpirun or srun "
        "for several ranks; with no subcommand, trains the built-in example.",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="Logging level (ranks other than 0 log warnings and above unless debug).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="Report what every rank sees and check the Horovod build.")
    doctor.add_argument("--strategy", default="auto", choices=("auto", "horovod", "local"))
    doctor.add_argument("--hosts", metavar="H1:N,H2:N",
                        help="Pre-flight check of a multi-host launch (names, interfaces, ssh) instead of the rank report.")
    doctor.add_argument("--network-interface", help="With --hosts: the interface(s) horovodrun will be told to use.")
    doctor.add_argument("--ssh-port", type=int, help="With --hosts: the ssh port horovodrun will use.")
    doctor.add_argument("--ssh-identity-file", help="With --hosts: the ssh key horovodrun will use.")

    from hvd_trainer import commands

    commands.add_subcommands(sub)
    return parser


def setup_logging(level: str, rank: int = 0) -> None:
    if rank != 0 and level != "debug":
        level = "warning"
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(message)s", stream=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hvd_trainer.distributed.launcher import detect_launcher

    setup_logging(args.log_level, detect_launcher().rank or 0)
    try:
        if args.command == "doctor" and args.hosts:
            from hvd_trainer.doctor import run_preflight

            code, text = run_preflight(args.hosts, args.network_interface, args.ssh_port, args.ssh_identity_file)
            print(text, flush=True)
            return code
        if args.command == "doctor":
            from hvd_trainer.doctor import run_doctor

            code, text = run_doctor(args.strategy)
            if text:
                print(text, flush=True)
            return code
        from hvd_trainer import commands

        return commands.run(args)
    except HvdTrainerError as e:
        print(f"hvd_trainer: error: {e}", file=sys.stderr, flush=True)
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        print("hvd_trainer: interrupted.", file=sys.stderr, flush=True)
        return 130
