"""A training run for the resume / signal / kill tests, launched under horovodrun or alone.

usage: resume_checks.py OUT_DIR RUN_DIR EPOCHS [--resume] [--slow SECONDS] [--tag NAME]
                        [--accumulation N] [--train-steps N] [--lr-schedule] [--amp] [--skip-save-progress]

--lr-schedule: warmup over a quarter of the run, then linear decay (the LR curve test).

Each rank writes OUT_DIR/<tag>.pid<R> at start and OUT_DIR/<tag>.rank<R>.json at the end
(final weights, the training loss history, why training stopped, and the exit code it uses).
The exit code follows the CLI's contract: 0 done or SIGINT, 75 after SIGTERM/SIGUSR1.
"""
import argparse
import logging
import json
import os
import sys
import time

from synthetic import datasets, flat_params, mlp_model

from hvd_trainer import signals
from hvd_trainer.callbacks import Callback
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.trainer import Trainer


class Slow(Callback):
    """Every rank sleeps after each batch, as on a slow machine; `started` is touched at the first one."""
    every_rank = True

    def __init__(self, seconds, started):
        self.seconds, self.started = seconds, started

    def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
        if self.started and not os.path.exists(self.started):
            open(self.started, "w").close()  # training (and its signal handlers) under way
        time.sleep(self.seconds)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out_dir")
    p.add_argument("run_dir")
    p.add_argument("epochs", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--tag", default="run")
    p.add_argument("--accumulation", type=int, default=1)
    p.add_argument("--train-steps", type=int)
    p.add_argument("--lr-schedule", action="store_true")
    p.add_argument("--amp", action="store_true", help="use_mixed_precision (bf16 autocast + GradScaler on CPU)")
    p.add_argument("--skip-save-progress", action="store_true")
    a = p.parse_args()
    s = init_dist_strategy("auto")
    logging.basicConfig(level=logging.INFO if s.rank() == 0 else logging.WARNING, format="%(message)s")
    r = s.rank()
    with open(os.path.join(a.out_dir, f"{a.tag}.pid{r}"), "w") as fh:
        fh.write(str(os.getpid()))
    train, val, _ = datasets(n_train=480, n_val=64)
    config = {"epochs": a.epochs, "batch_size": 16, "learning_rate": 0.003, "early_stop": -1,
              "checkpoints_per_epoch": 2, "optimizer": {"type": "adam"}, "gradient_accumulation_steps": a.accumulation,
              "train_steps": a.train_steps, "use_mixed_precision": a.amp}
    if a.lr_schedule:
        config["learning_rate_scheduler"] = {"warmup_fraction": 0.25, "decay": "linear"}
    callbacks = [Slow(a.slow, os.path.join(a.out_dir, f"{a.tag}.started{r}"))] if a.slow else []
    t = Trainer(config, mlp_model(seed=1, dropout=0.2), distributed=s, resume=a.resume, callbacks=callbacks,
                random_seed=5, skip_save_progress=a.skip_save_progress)
    t.train(train, val, save_path=a.run_dir)
    pt = t.last_progress_tracker
    code = signals.exit_code_for(t.stop_reason)
    with open(os.path.join(a.out_dir, f"{a.tag}.rank{r}.json"), "w") as fh:
        json.dump({"params": flat_params(t.model if t.stop_reason else _latest_weights(t)), "steps": pt.steps,
                   "loss_history": pt.train_metrics.get("combined", {}).get("loss", []), "stop_reason": t.stop_reason,
                   "exit_code": code, "world_size": s.size(), "step_losses": _step_series(a.run_dir),
                   "step_learning_rates": _step_series(a.run_dir, "combined/step_learning_rate"),
                   "total_steps": t.scheduler.total_steps, "warmup_steps": t.scheduler.warmup_steps,
                   "base_lr": t.scheduler.base_lr,
                   "grad_scaler": t.scaler.state_dict() if t.scaler is not None else None}, fh)
    s.barrier()  # every rank's report written before a non-zero exit makes the launcher end the others
    sys.exit(code)


def _step_series(run_dir, tag="combined/step_training_loss"):
    """A per-step curve from TensorBoard (all event files: first run and resumes)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(os.path.join(run_dir, "logs", "training")).Reload()
    if tag not in acc.Tags()["scalars"]:
        return []
    return [[e.step, e.value] for e in acc.Scalars(tag)]


def _latest_weights(trainer):
    # Compare the weights the run ended with, not the best ones train() reloads at the end.
    import torch

    from hvd_trainer.checkpoint import load_checkpoint_file

    model = mlp_model(dropout=0.2)
    state = load_checkpoint_file(os.path.join(trainer.last_save_path, "training_checkpoints", "latest.ckpt"))
    model.load_state_dict(state["model"])
    return model


if __name__ == "__main__":
    main()
