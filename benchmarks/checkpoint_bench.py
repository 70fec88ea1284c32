"""Checkpoint save time against a plain torch.save of the same state, and resume (load) time.

The state is a model with about 8.4M parameters (a 2,048-wide MLP) plus its Adam state, about
100 MB. hvd_trainer's save adds: gathering RNG states, a hard link of the old latest to
previous.ckpt, writing to a temp file, fsync, rename, and a directory fsync. Three ways are
timed, alternating (plain, in the loop, in the background, ...), median of --repeats each:
- plain: torch.save(state, path), no fsync;
- in the loop (checkpoint_in_background: false): the whole atomic, fsynced write;
- in the background (the default): what the training loop waits for (a copy of the state in
  memory), and separately the time until the file is on disk (save + wait()).
Between two saves the benchmark does the work of a few training steps on the same model, so the
background write competes with training for the CPU as it would in a run.
Target: blocking ratio <= 1.3.

usage: python benchmarks/checkpoint_bench.py [--repeats 5] [--dir /tmp/...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import torch


def make_state():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                                torch.nn.ReLU(), torch.nn.Linear(2048, 10))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 2048)).sum().backward()
    opt.step()
    return model, opt


def main() -> None:
    from hvd_trainer.checkpoint import Checkpoint, CheckpointManager
    from hvd_trainer.distributed import LocalStrategy
    from hvd_trainer.lr_scheduler import LRScheduler
    from hvd_trainer.config import LRSchedulerConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default=None, help="where to write (default: a temp dir on the working disk)")
    p.add_argument("--json")
    a = p.parse_args()
    base = tempfile.mkdtemp(dir=a.dir or os.path.dirname(os.path.abspath(__file__)))
    try:
        model, opt = make_state()
        scheduler = LRScheduler(LRSchedulerConfig(), opt)

        def manager(name: str, background: bool) -> CheckpointManager:
            return CheckpointManager(Checkpoint(LocalStrategy(), model, opt, scheduler), os.path.join(base, name),
                                     LocalStrategy(), background=background)

        in_loop, in_background = manager("loop", False), manager("background", True)
        batch = torch.randn(256, 2048)

        def train_a_little() -> None:
            for _ in range(3):
                opt.zero_grad()
                model(batch).square().mean().backward()
                opt.step()

        plain_path = os.path.join(base, "plain.pt")
        times = {"plain": [], "loop": [], "background_blocking": [], "background_durable": [], "load": []}
        for _ in range(a.repeats):
            t = time.perf_counter()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, plain_path)
            times["plain"].append(time.perf_counter() - t)
            train_a_little()
            t = time.perf_counter()
            in_loop.save(progress={"steps": 1})
            times["loop"].append(time.perf_counter() - t)
            train_a_little()
            t = time.perf_counter()
            in_background.save(progress={"steps": 1})
            times["background_blocking"].append(time.perf_counter() - t)
            train_a_little()  # runs while the file is written
            in_background.wait()
            times["background_durable"].append(time.perf_counter() - t)
            t = time.perf_counter()
            in_loop.checkpoint.apply(in_loop.read_latest(), in_loop.latest_path)
            times["load"].append(time.perf_counter() - t)
        size_mb = os.path.getsize(in_loop.latest_path) / 2**20
        med = {k: statistics.median(v) for k, v in times.items()}
        result = {"size_mb": size_mb, "plain_torch_save_s": med["plain"], "in_loop_save_s": med["loop"],
                  "background_blocking_s": med["background_blocking"],
                  "background_until_durable_s": med["background_durable"], "resume_load_s": med["load"],
                  "ratio_in_loop": med["loop"] / med["plain"],
                  "ratio_background_blocking": med["background_blocking"] / med["plain"]}
        ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
        print(f"| checkpoint ({size_mb:.0f} MB), median of {a.repeats} | time | ratio to torch.save |")
        print("|---|---|---|")
        print(f"| plain torch.save (no fsync) | {ms(med['plain'])} | 1.00 |")
        print(f"| hvd_trainer, checkpoint_in_background: false (atomic, fsync) | {ms(med['loop'])} | "
              f"{result['ratio_in_loop']:.2f} |")
        print(f"| hvd_trainer, in the background (default): training blocked | {ms(med['background_blocking'])} | "
              f"{result['ratio_background_blocking']:.2f} |")
        print(f"| hvd_trainer, in the background: until on disk (3 training steps meanwhile) | "
              f"{ms(med['background_durable'])} | - |")
        print(f"| resume: read + apply latest.ckpt | {ms(med['load'])} | - |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(result, fh, indent=2)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
