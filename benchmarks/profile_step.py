"""Where hvd_trainer's training-step time goes: cProfile over the training steps only.

Runs the CLI's path (the task's YAML -> load_training_data -> build_model -> Trainer with the
CLI's defaults: TensorBoard step logs, progress bar, checkpoints) under horovodrun -np 1, with
the profiler switched on by a Callback for the training steps and off during evaluation and
checkpointing. Reports, per training step, the top functions by own time and the cumulative
time of the parts of a step (batching, tensors, forward, backward, optimizer, metrics, logging,
control allreduce). cProfile adds a few microseconds to every Python call, so the shares matter
more than the absolute numbers; run.py's unprofiled runs give the real overhead.

usage: horovodrun -np 1 python benchmarks/profile_step.py --task DIR/task.json [--epochs 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task as bench  # noqa: E402

#: (label, file suffix, function name): the parts of one step, by cumulative time.
PARTS = [
    ("whole step loop (Trainer._train_loop)", "hvd_trainer/trainer.py", "_train_loop"),
    ("train_step: forward+backward+step+metrics", "hvd_trainer/step.py", "__call__"),
    ("batcher.next_batch (numpy take of every column)", "hvd_trainer/data/dataset.py", "next_batch"),
    ("model.input_tensors (one tensor per input feature)", "hvd_trainer/models/base.py", "input_tensors"),
    ("model.target_tensors", "hvd_trainer/models/base.py", "target_tensors"),
    ("FeatureModel.forward", "hvd_trainer/models/feature_model.py", "forward"),
    ("  Passthrough encoders (per feature)", "hvd_trainer/features/model_parts.py", "forward"),
    ("  ConcatCombiner.forward", "hvd_trainer/models/combiner.py", "forward"),
    ("model.train_loss", "hvd_trainer/models/base.py", "train_loss"),
    ("backward (strategy.backward)", "hvd_trainer/distributed/base.py", "backward"),
    ("wait_optimizer_synced (Horovod synchronize)", "hvd_trainer/distributed/horovod.py", "wait_optimizer_synced"),
    ("optimizer step (strategy.step)", "hvd_trainer/distributed/horovod.py", "step"),
    ("zero_grad", "hvd_trainer/distributed/base.py", "zero_grad"),
    ("model.update_metrics (loss, accuracy, hits_at_k)", "hvd_trainer/models/base.py", "update_metrics"),
    ("write_step_summary (TensorBoard, 3 scalars)", "hvd_trainer/summary.py", "write_step_summary"),
    ("control allreduce submit", "hvd_trainer/control.py", "submit"),
    ("control allreduce collect", "hvd_trainer/control.py", "collect"),
    ("LR scheduler step", "hvd_trainer/lr_scheduler.py", "step"),
    ("progress bar (tqdm.update)", "tqdm/std.py", "update"),
    ("callbacks dispatch (Trainer.callback)", "hvd_trainer/trainer.py", "callback"),
    ("isfinite of the loss (Control.note_loss)", "hvd_trainer/control.py", "note_loss"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--json")
    p.add_argument("--dump", help="also write the raw cProfile stats here (for pstats / snakeviz)")
    a = p.parse_args()

    from hvd_trainer.callbacks import Callback
    from hvd_trainer.config import TrainerConfig, load_yaml
    from hvd_trainer.data.pipeline import load_training_data
    from hvd_trainer.distributed import init_dist_strategy
    from hvd_trainer.model_config import ModelConfig
    from hvd_trainer.models.feature_model import build_model
    from hvd_trainer.trainer import Trainer
    import torch

    task = bench.load_task(a.task)
    config = load_yaml(task["config"])
    config["trainer"]["epochs"] = a.epochs
    model_config, trainer_config = ModelConfig.from_dict(config), TrainerConfig.from_dict(config["trainer"])
    strategy = init_dist_strategy("horovod")
    paths = task["paths"]
    train, val, test, metadata = load_training_data(model_config, strategy, training_set=paths["training"],
                                                    validation_set=paths["validation"], test_set=paths["test"],
                                                    random_seed=task["seed"])
    torch.manual_seed(task["seed"])
    model = build_model(model_config, metadata)
    profiler = cProfile.Profile()

    class Toggle(Callback):
        def on_trainer_train_setup(self, trainer, save_path, is_coordinator):
            profiler.enable()

        def on_eval_start(self, trainer, progress_tracker, save_path):
            profiler.disable()

        def on_checkpoint(self, trainer, progress_tracker):
            profiler.enable()

        def on_trainer_train_teardown(self, trainer, progress_tracker, save_path, is_coordinator):
            profiler.disable()

    trainer = Trainer(trainer_config, model, distributed=strategy, random_seed=task["seed"], callbacks=[Toggle()])
    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(train, val, test, save_path=os.path.join(tmp, "model"))
    steps = trainer.last_progress_tracker.steps

    if a.dump:
        profiler.dump_stats(a.dump)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{_short(filename)}:{line}({func})", "file": filename, "name": func,
                     "calls_per_step": nc / steps, "own_us_per_step": tt / steps * 1e6,
                     "cum_us_per_step": ct / steps * 1e6})
    total_own = sum(r["own_us_per_step"] for r in rows)
    top = sorted(rows, key=lambda r: -r["own_us_per_step"])[:a.top]
    parts = []
    for label, suffix, name in PARTS:
        match = [r for r in rows if r["file"].endswith(suffix) and r["name"] == name]
        if match:
            parts.append({"part": label, "cum_us_per_step": sum(r["cum_us_per_step"] for r in match),
                          "calls_per_step": sum(r["calls_per_step"] for r in match)})
    module_calls = sum(r["calls_per_step"] for r in rows if r["name"] == "_call_impl")
    result = {"steps": steps, "profiled_us_per_step": total_own, "module_calls_per_step": module_calls,
              "input_features": len(model.input_features), "top_own_time": [
                  {k: v for k, v in r.items() if k not in ("file", "name")} for r in top], "parts": parts}

    print(f"{steps} steps profiled, {total_own:.0f} us per step under cProfile; "
          f"{module_calls:.0f} nn.Module calls per step ({len(model.input_features)} input features)")
    print("\n| part of a step | cumulative us/step | calls/step |\n|---|---|---|")
    for part in parts:
        print(f"| {part['part']} | {part['cum_us_per_step']:.0f} | {part['calls_per_step']:.1f} |")
    print("\n| function (top by own time) | own us/step | cumulative us/step | calls/step |\n|---|---|---|---|")
    for r in top:
        print(f"| {r['function']} | {r['own_us_per_step']:.1f} | {r['cum_us_per_step']:.1f} | {r['calls_per_step']:.1f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=2)


def _short(filename: str) -> str:
    for marker in ("site-packages/", "hvd_trainer/", "lib/python3"):
        i = filename.find(marker)
        if i >= 0:
            return filename[i + (len(marker) if marker == "site-packages/" else 0):]
    return filename


if __name__ == "__main__":
    main()
