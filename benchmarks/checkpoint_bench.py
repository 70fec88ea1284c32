"""Checkpoint save time against a plain torch.save of the same state, and resume (load) time.

The state is a model with about 8.4M parameters (a 2,048-wide MLP) plus its Adam state, about
100 MB. hvd_trainer's save adds: gathering RNG states, a hard link of the old latest to
previous.ckpt, writing to a temp file, fsync, rename, and a directory fsync. Runs alternate
(plain, ours, plain, ours, ...), median of --repeats each. Target: ratio <= 1.3.

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
        manager = CheckpointManager(Checkpoint(LocalStrategy(), model, opt, scheduler), base, LocalStrategy())
        plain_path = os.path.join(base, "plain.pt")
        plain, ours, loads = [], [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, plain_path)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            manager.save(progress={"steps": 1})
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            manager.checkpoint.apply(manager.read_latest(), manager.latest_path)
            loads.append(time.perf_counter() - t)
        size_mb = os.path.getsize(manager.latest_path) / 2**20
        result = {"size_mb": size_mb, "plain_torch_save_s": statistics.median(plain),
                  "hvd_trainer_save_s": statistics.median(ours), "resume_load_s": statistics.median(loads)}
        result["ratio"] = result["hvd_trainer_save_s"] / result["plain_torch_save_s"]
        print(f"| checkpoint ({size_mb:.0f} MB) | plain torch.save | hvd_trainer save (atomic, fsync) | ratio | resume load |")
        print("|---|---|---|---|---|")
        print(f"| median of {a.repeats} | {result['plain_torch_save_s'] * 1000:.0f} ms | "
              f"{result['hvd_trainer_save_s'] * 1000:.0f} ms | {result['ratio']:.2f} | {result['resume_load_s'] * 1000:.0f} ms |")
        if a.json:
            with open(a.json, "w") as fh:
                json.dump(result, fh, indent=2)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
