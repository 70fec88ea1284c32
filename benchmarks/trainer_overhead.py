"""hvd_trainer's Trainer against a bare hand-written Horovod loop, at np=1 and np=2, in one run.

Same MLP (64-128-128-10), same in-memory data (make_classification, 20,000 rows), batch 128 per
rank, Adam, evaluation and saving off, gradient clipping off in both.

The two are interleaved epoch by epoch in the same processes: after each epoch of
Trainer.train(), a callback runs one epoch of the bare loop (its own model and optimizer) and
its time is taken out of the trainer's, which keeps everything else of train() (setup, the
callback dispatch itself). On a small shared VM the same loop's speed drifts by up to 1.7x
within seconds; epochs 0.1-0.2 s apart see the same machine, so the ratio of each run is
stable where separate launches are not. Timing starts from a collected heap: otherwise a
full garbage collection of the setup's objects (100-200 ms here) lands at random inside the
timed section. Target: trainer / bare >= 0.95.

With --task (a task.json of benchmarks/.data, e.g. the table task), the trainer is the CLI's:
the task's YAML -> load_training_data -> build_model -> Trainer with the CLI's defaults for
what runs per step (TensorBoard step logs and the progress bar on rank 0; evaluation off, as
run.py's training throughput leaves it out), and the bare loop trains the task's MLP on the
same training rows (z-scored as the CLI does). That is `make bench`'s CLI / bare-loop ratio,
measured where the machine's drift cancels out.

The trainer fuses Adam by default (hvd_trainer/optimizers.py); the bare loop is the canonical one,
torch's per-tensor Adam, unless BARE_FUSED=1 is set, which gives it the fused kernel as well and
so leaves only the trainer's own per-step work in the ratio.

usage: [BARE_FUSED=1] python benchmarks/trainer_overhead.py [--launches 4] [--runs 3] [--epochs 10] [--task T.json] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import horovodrun, last_json_line, mlp, synthetic_table  # noqa: E402

ROWS, BATCH, LR = 20000, 128, 0.001


class BareLoop:
    """The canonical Horovod PyTorch loop, written by hand, one epoch per call."""

    def __init__(self, x=None, y=None, model=None):
        import horovod.torch as hvd
        import torch

        hvd.init()
        self.hvd = hvd
        if x is None:  # (with the CLI's trainer, the threads are the ones the strategy chose for both)
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // hvd.local_size()))
            x, y = synthetic_table(ROWS)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.rows = len(y)
        self.model = model if model is not None else mlp()
        # BARE_FUSED=1: the bare loop with torch's fused Adam too (the trainer's default; see optimizers.py),
        # which leaves the trainer's own per-step cost alone in the ratio.
        opt = torch.optim.Adam(self.model.parameters(), lr=LR * hvd.size(), fused=os.environ.get("BARE_FUSED") == "1")
        hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
        self.opt = hvd.DistributedOptimizer(opt, named_parameters=self.model.named_parameters(prefix="bare"))
        self.n_local = -(-self.rows // hvd.size())
        self.n_batches = -(-self.n_local // BATCH)
        self._epoch, self._pending = -1, []

    def run_epoch(self, epoch: int) -> int:
        for index in self._epoch_batches(epoch):
            self.step(index)
        return self.n_batches

    def run_steps(self, n: int) -> int:
        """n steps on from where the last call stopped (epochs in run_epoch's orders)."""
        for _ in range(n):
            if not self._pending:
                self._epoch += 1
                self._pending = self._epoch_batches(self._epoch)[::-1]
            self.step(self._pending.pop())
        return n

    def _epoch_batches(self, epoch: int) -> list:
        import numpy as np

        hvd = self.hvd
        order = np.resize(np.random.default_rng([42, epoch]).permutation(self.rows),
                          self.n_local * hvd.size())[hvd.rank()::hvd.size()]
        return [order[i:i + BATCH] for i in range(0, self.n_local, BATCH)]

    def step(self, index) -> None:
        import torch

        idx = torch.from_numpy(index)
        self.opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(self.model(self.x[idx]), self.y[idx])
        loss.backward()
        self.opt.step()


def cli_trainer_and_bare(task_path: str, epochs: int, strategy, callback):
    """The CLI's Trainer on the task (evaluation off) and a bare loop on the same training rows."""
    import yaml

    import task as bench
    from hvd_trainer.config import TrainerConfig
    from hvd_trainer.data.pipeline import load_training_data
    from hvd_trainer.model_config import ModelConfig
    from hvd_trainer.models.feature_model import build_model
    from hvd_trainer.trainer import Trainer

    task = bench.load_task(task_path)
    with open(task["config"]) as fh:
        config = yaml.safe_load(fh)
    config["trainer"].update(epochs=epochs, skip_all_evaluation=True)
    model_config, trainer_config = ModelConfig.from_dict(config), TrainerConfig.from_dict(config["trainer"])
    paths = task["paths"]
    data, _, _, metadata = load_training_data(model_config, strategy, training_set=paths["training"],
                                              random_seed=task["seed"])
    x, y = bench.load_arrays(task)["training"]
    bare = BareLoop(x, y, bench.build_mlp(task))
    trainer = Trainer(trainer_config, build_model(model_config, metadata), distributed=strategy,
                      random_seed=task["seed"], callbacks=[callback], skip_save_model=True, skip_save_progress=True)
    return trainer, data, bare


def interleaved_run(epochs: int, task_path: Optional[str] = None, slice_steps: int = 0) -> dict:
    """One Trainer.train() of `epochs` epochs, with one bare epoch run after each trainer epoch
    (or, with slice_steps, slice_steps bare steps after every slice_steps trainer steps).

    The bare epochs run inside an on_epoch_end callback and their time is taken out of the
    trainer's; the trainer keeps every other cost of train() (setup, the callback dispatch).
    Slices of ~0.1 s see the same machine even while other jobs come and go (the trainer then
    pays one more callback call per step, about a microsecond).
    """
    from hvd_trainer.callbacks import Callback
    from hvd_trainer.data import Dataset
    from hvd_trainer.distributed import init_dist_strategy
    from hvd_trainer.models import CategoryOutput, ModuleAdapter, TensorInput
    from hvd_trainer.trainer import Trainer

    strategy = init_dist_strategy("horovod")

    class BareEpochAfterEach(Callback):
        every_rank = True  # the bare loop's allreduces need every rank
        seconds, cpu_seconds, steps = 0.0, 0.0, 0

        def on_epoch_end(self, trainer, progress_tracker, save_path):
            begin = time.perf_counter()
            self.steps += bare.run_epoch(progress_tracker.epoch - 1)
            self.seconds += time.perf_counter() - begin

    class BareSliceAfterEach(BareEpochAfterEach):
        def on_epoch_end(self, trainer, progress_tracker, save_path):
            pass  # the bare steps run in slices (on_batch_end), not by the epoch

        def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
            if progress_tracker.steps % slice_steps == 0:
                begin, cpu = time.perf_counter(), time.process_time()
                self.steps += bare.run_steps(slice_steps)
                self.seconds += time.perf_counter() - begin
                self.cpu_seconds += time.process_time() - cpu

        def on_trainer_train_setup(self, trainer, save_path, is_coordinator):
            self.loop_started = (time.perf_counter(), time.process_time())

        def on_trainer_train_teardown(self, trainer, progress_tracker, save_path, is_coordinator):
            self.loop_seconds = time.perf_counter() - self.loop_started[0]
            self.loop_cpu_seconds = time.process_time() - self.loop_started[1]

    interleave = BareSliceAfterEach() if slice_steps else BareEpochAfterEach()
    if task_path:
        trainer, data, bare = cli_trainer_and_bare(task_path, epochs, strategy, interleave)
    else:
        bare = BareLoop()
        x, y = synthetic_table(ROWS)
        model = ModuleAdapter(mlp(), [TensorInput("x", (64,))], [CategoryOutput("y", 10)])
        trainer = Trainer({"epochs": epochs, "batch_size": BATCH, "learning_rate": LR, "skip_all_evaluation": True,
                           "gradient_clipping": {"clipglobalnorm": None}}, model, distributed=strategy,
                          skip_save_model=True, skip_save_progress=True, skip_save_log=True, callbacks=[interleave])
        data = Dataset({"x": x, "y": y})
    gc.collect()
    # Ranks leave their garbage collections at different times; a rank that started its clock
    # early would charge its wait in the trainer's first collective to the trainer.
    strategy.barrier()
    start = time.perf_counter()
    trainer.train(data, save_path="/tmp/hvd_trainer_bench_overhead")
    trainer_seconds = time.perf_counter() - start - interleave.seconds
    per_step = BATCH * strategy.size()
    bare_rate = interleave.steps * per_step / interleave.seconds
    trainer_rate = trainer.last_progress_tracker.steps * per_step / trainer_seconds
    result = {"bare": bare_rate, "trainer": trainer_rate, "ratio": trainer_rate / bare_rate,
              "bare_seconds": interleave.seconds, "trainer_seconds": trainer_seconds}
    if slice_steps:  # the loop alone (as run.py's train_s), by the clock and by this process's CPU time
        loop_seconds = interleave.loop_seconds - interleave.seconds
        loop_cpu = interleave.loop_cpu_seconds - interleave.cpu_seconds
        steps = trainer.last_progress_tracker.steps
        result.update(loop_ratio=(steps / loop_seconds) / (interleave.steps / interleave.seconds),
                      cpu_ratio=(steps / loop_cpu) / (interleave.steps / interleave.cpu_seconds))
    return result


def worker(epochs: int, runs: int, task_path: Optional[str], slice_steps: int) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    import horovod.torch as hvd

    interleaved_run(1, task_path, slice_steps)  # first-call costs (imports, allocator) out of the way
    results = [interleaved_run(epochs, task_path, slice_steps) for _ in range(runs)]
    if hvd.rank() == 0:
        print(json.dumps({"results": results}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--launches", type=int, default=4, help="horovodrun launches per np")
    p.add_argument("--runs", type=int, default=3, help="interleaved trainings per launch")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--np", type=int, nargs="+", default=[1, 2])
    p.add_argument("--task", help="a task.json: the CLI's model, data and per-step logging (see above)")
    p.add_argument("--slice", type=int, default=0,
                   help="interleave every N steps instead of every epoch (for a machine other jobs share)")
    p.add_argument("--json", help="write every run here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        worker(a.epochs, a.runs, a.task, a.slice)
        return
    task_args = (["--task", os.path.abspath(a.task)] if a.task else []) + ["--slice", str(a.slice)]
    runs = []
    for np_ in a.np:
        for launch in range(a.launches):
            r = horovodrun(np_, [os.path.abspath(__file__), "--worker", "--epochs", str(a.epochs), "--runs", str(a.runs)]
                           + task_args)
            if r.returncode != 0:
                raise SystemExit(f"np={np_} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
            for result in last_json_line(r.stdout)["results"]:
                runs.append({"np": np_, "launch": launch, **result})
                extra = (f", loop only {result['loop_ratio']:.3f}, by CPU time {result['cpu_ratio']:.3f}"
                         if "loop_ratio" in result else "")
                print(f"np={np_} launch {launch + 1}: bare {result['bare']:.0f}, hvd_trainer {result['trainer']:.0f} "
                      f"samples/s, ratio {result['ratio']:.3f}{extra}", flush=True)
    print("\n| np | bare Horovod loop (samples/s, median) | hvd_trainer (samples/s, median) "
          "| ratio (median of runs, min-max) |")
    print("|---|---|---|---|")
    summary = []
    for np_ in a.np:
        mine = [r for r in runs if r["np"] == np_]
        med = {k: statistics.median(r[k] for r in mine) for k in ("bare", "trainer")}
        ratios = [r["ratio"] for r in mine]
        summary.append({"np": np_, **med, "ratio": statistics.median(ratios), "ratios": ratios})
        print(f"| {np_} | {med['bare']:.0f} | {med['trainer']:.0f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"runs": runs, "summary": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
