"""hvd_trainer's Trainer against a bare hand-written Horovod loop, at np=1 and np=2, in one run.

Same MLP (64-128-128-10), same in-memory data (make_classification, 20,000 rows), batch 128 per
rank, Adam, evaluation and saving off, gradient clipping off in both. Both start timing from a
collected heap: otherwise a full garbage collection of the setup's objects (100-200 ms on a
2-core machine, over torch's and sklearn's module objects) lands at random inside one of the
timed sections and swamps the difference being measured. Runs alternate
(bare, trainer, bare, trainer, ...) so that machine noise hits both alike; the median
samples/s of each is reported with the ratio trainer / bare (target >= 0.95), and the median
of the paired ratios (each trainer run over the bare run just before it).

usage: python benchmarks/trainer_overhead.py [--repeats 5] [--epochs 10] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import horovodrun, last_json_line, mlp, synthetic_table  # noqa: E402

ROWS, BATCH, LR = 20000, 128, 0.001


def bare_loop(epochs: int) -> dict:
    """The canonical Horovod PyTorch loop, written by hand."""
    import horovod.torch as hvd
    import numpy as np
    import torch

    hvd.init()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // hvd.local_size()))
    x, y = synthetic_table(ROWS)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), lr=LR * hvd.size())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters())
    n_local = -(-ROWS // hvd.size())
    steps = 0
    gc.collect()
    start = time.perf_counter()
    for epoch in range(epochs):
        order = np.resize(np.random.default_rng([42, epoch]).permutation(ROWS), n_local * hvd.size())[hvd.rank()::hvd.size()]
        for i in range(0, n_local, BATCH):
            idx = torch.from_numpy(order[i:i + BATCH])
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            steps += 1
    seconds = time.perf_counter() - start
    return {"samples_per_s": steps * BATCH * hvd.size() / seconds, "steps": steps, "seconds": seconds}


def trainer_loop(epochs: int) -> dict:
    from hvd_trainer.data import Dataset
    from hvd_trainer.distributed import init_dist_strategy
    from hvd_trainer.models import CategoryOutput, ModuleAdapter, TensorInput
    from hvd_trainer.trainer import Trainer

    strategy = init_dist_strategy("horovod")
    x, y = synthetic_table(ROWS)
    model = ModuleAdapter(mlp(), [TensorInput("x", (64,))], [CategoryOutput("y", 10)])
    trainer = Trainer({"epochs": epochs, "batch_size": BATCH, "learning_rate": LR, "skip_all_evaluation": True,
                       "gradient_clipping": {"clipglobalnorm": None}}, model, distributed=strategy,
                      skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    data = Dataset({"x": x, "y": y})
    gc.collect()
    start = time.perf_counter()
    trainer.train(data, save_path="/tmp/hvd_trainer_bench_overhead")
    seconds = time.perf_counter() - start
    steps = trainer.last_progress_tracker.steps
    return {"samples_per_s": steps * BATCH * strategy.size() / seconds, "steps": steps, "seconds": seconds}


def worker(kind: str, epochs: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = bare_loop(epochs) if kind == "bare" else trainer_loop(epochs)
    import horovod.torch as hvd

    if hvd.rank() == 0:
        print(json.dumps(result), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--np", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", help="write every run here")
    p.add_argument("--worker", choices=("bare", "trainer"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.worker, a.epochs)
        return
    runs = []
    for np_ in a.np:
        for rep in range(a.repeats):
            for kind in ("bare", "trainer"):
                r = horovodrun(np_, [os.path.abspath(__file__), "--worker", kind, "--epochs", str(a.epochs)])
                if r.returncode != 0:
                    raise SystemExit(f"{kind} at np={np_} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
                result = last_json_line(r.stdout)
                runs.append({"np": np_, "kind": kind, "repeat": rep, **result})
                print(f"np={np_} {kind:<8} run {rep + 1}: {result['samples_per_s']:.0f} samples/s", flush=True)
    print("\n| np | bare Horovod loop (samples/s, median) | hvd_trainer (samples/s, median) | ratio of medians "
          "| paired ratios (median, min-max) |")
    print("|---|---|---|---|---|")
    summary = []
    for np_ in a.np:
        med = {k: statistics.median(r["samples_per_s"] for r in runs if r["np"] == np_ and r["kind"] == k)
               for k in ("bare", "trainer")}
        # Each trainer run over the bare run just before it: slow drifts of the machine cancel out.
        paired = [t["samples_per_s"] / b["samples_per_s"] for b, t in zip(
            [r for r in runs if r["np"] == np_ and r["kind"] == "bare"],
            [r for r in runs if r["np"] == np_ and r["kind"] == "trainer"])]
        ratio = med["trainer"] / med["bare"]
        summary.append({"np": np_, **med, "ratio": ratio, "paired_ratio_median": statistics.median(paired),
                        "paired_ratios": paired})
        print(f"| {np_} | {med['bare']:.0f} | {med['trainer']:.0f} | {ratio:.3f} | "
              f"{statistics.median(paired):.3f} ({min(paired):.3f}-{max(paired):.3f}) |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"runs": runs, "summary": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
