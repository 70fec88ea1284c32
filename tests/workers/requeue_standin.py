"""A stand-in for `python -m hvd_trainer train` that follows only its exit-code contract.

It tests the batch script's signal/requeue protocol (slurm/train.sbatch), not the trainer: the
script starts it exactly as it starts the trainer (HVD_TRAINER_CMD="python requeue_standin.py",
then `train --config C --dataset D --output-directory O --experiment-name E --model-name M
--resume O/E_M [extra args]`), under srun, mpirun or horovodrun. tests/test_slurm.py uses the
real trainer (the digits example) for the protocol; this stand-in is only for the tests that need
a trainer that misbehaves on purpose: one that fails at once, or one that never finishes and keeps
asking to be requeued (the requeue cap).

Contract followed (the CLI's):
  first start: --resume R with --config, where R holds no checkpoint yet (or no --resume): wait
               for SIGUSR1/SIGTERM, then rank 0 writes a "checkpoint" in the Ludwig layout
               (O/E_M/model/training_progress.json, .../training_checkpoints/latest.ckpt), and
               every rank exits 75 (saved, requeue me);
  --resume R:  with a checkpoint in R: exits 0 (finished). R must be O/E_M, else exit 2 (a
               check on the batch script; the CLI itself accepts any run directory);
  bad input:   exits 2 (config or dataset not found).
Test-only arguments: --standin-exit N exits N at once (a failing trainer);
--standin-never-finish keeps asking to be requeued even when resuming (for the requeue cap).

Rank 0 appends one JSON line per start and per exit to O/E_M/standin.log, and every rank
touches O/E_M/standin/ready.<restart>.<rank> once its signal handlers are installed, so a test
knows when a signal will be handled. It imports no torch or Horovod, to keep the jobs light.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

EX_REQUEUE = 75
EX_USAGE = 2
WAIT_LIMIT_S = 300  # never hang a test job: a stand-in that is never signalled fails

_signal_seen = []


def _on_signal(signum, _frame):
    _signal_seen.append(signal.Signals(signum).name)


# Handlers first: the batch script may signal as soon as the process exists.
signal.signal(signal.SIGUSR1, _on_signal)
signal.signal(signal.SIGTERM, _on_signal)



def _load_detect_launcher():
    """hvd_trainer's own "who am I" (never SLURM_PROCID alone), loaded from its file: importing
    the hvd_trainer.distributed package would import torch, seconds per rank on a small machine."""
    import importlib.util

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(repo, "hvd_trainer", "distributed", "launcher.py")
    spec = importlib.util.spec_from_file_location("_hvd_trainer_launcher", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.detect_launcher


detect_launcher = _load_detect_launcher()


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="requeue_standin")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--config", required=True)
    train.add_argument("--dataset", required=True)
    train.add_argument("--output-directory", required=True)
    train.add_argument("--experiment-name", required=True)
    train.add_argument("--model-name", required=True)
    train.add_argument("--resume")
    train.add_argument("--standin-exit", type=int)
    train.add_argument("--standin-never-finish", action="store_true")
    return parser.parse_args(argv)


def write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    launch = detect_launcher()
    rank, size = launch.rank or 0, launch.size or 1
    run_dir = os.path.join(args.output_directory, f"{args.experiment_name}_{args.model_name}")
    restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    progress = os.path.join(run_dir, "model", "training_progress.json")
    ckpt = os.path.join(run_dir, "model", "training_checkpoints", "latest.ckpt")

    def record(event, **fields):
        if rank == 0:
            os.makedirs(run_dir, exist_ok=True)
            line = dict(event=event, restart=restart, rank=rank, size=size, launcher=launch.launcher,
                        resume=args.resume, time=time.time(), **fields)
            with open(os.path.join(run_dir, "standin.log"), "a") as f:
                f.write(json.dumps(line) + "\n")

    for path in (args.config, args.dataset):
        if not os.path.exists(path):
            print(f"requeue_standin: error: {path} not found.", file=sys.stderr, flush=True)
            return EX_USAGE
    record("start", argv=sys.argv[1:])
    if args.standin_exit is not None:
        record("exit", code=args.standin_exit)
        return args.standin_exit
    if args.resume:
        if os.path.abspath(args.resume) != os.path.abspath(run_dir):
            print(f"requeue_standin: error: --resume {args.resume} is not {run_dir}.", file=sys.stderr, flush=True)
            record("exit", code=EX_USAGE)
            return EX_USAGE
        # Like the CLI: with --config, a run directory that holds nothing yet is a first start.
        resumed = os.path.exists(progress) and os.path.exists(ckpt)
        if resumed and not args.standin_never_finish:
            print(f"requeue_standin: rank {rank}: resumed from {args.resume}, finished.", flush=True)
            record("exit", code=0)
            return 0

    os.makedirs(os.path.join(run_dir, "standin"), exist_ok=True)
    open(os.path.join(run_dir, "standin", f"ready.{restart}.{rank}"), "w").close()
    print(f"requeue_standin: rank {rank}/{size} ({launch.launcher}) waiting for SIGUSR1/SIGTERM.", flush=True)
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not _signal_seen and time.monotonic() < deadline:
        time.sleep(0.1)
    if not _signal_seen:
        print("requeue_standin: no signal within the wait limit.", file=sys.stderr, flush=True)
        record("exit", code=1)
        return 1
    if rank == 0:
        # Like the trainer, only rank 0 writes; it takes a moment, so the other ranks exit first
        # (which is what would make mpirun/horovodrun abort a half-written save).
        time.sleep(1.0)
        checkpoints = 1
        if os.path.exists(progress):
            checkpoints += json.load(open(progress)).get("checkpoint_number", 0)
        write_atomic(ckpt, "stand-in checkpoint\n")
        write_atomic(progress, json.dumps({"checkpoint_number": checkpoints, "standin": True}))
    print(f"requeue_standin: rank {rank}: got {_signal_seen[0]}, checkpoint saved, exit {EX_REQUEUE}.", flush=True)
    record("exit", code=EX_REQUEUE, signal=_signal_seen[0])
    return EX_REQUEUE


if __name__ == "__main__":
    sys.exit(main())
