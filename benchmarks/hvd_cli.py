"""Runs `python -m hvd_trainer ARGS...` unchanged, and reports what the benchmark measures.

    horovodrun -np 2 python benchmarks/hvd_cli.py train --config c.yaml --training-set t.parquet ...

is `horovodrun -np 2 python -m hvd_trainer train ...` plus two things, added from outside
(nothing in hvd_trainer/ changes):

- a Callback, through the Trainer's public `callbacks` argument, that stamps the first training
  step (on_trainer_train_setup fires right before the loop's first batch), the time spent in
  evaluation and checkpointing (on_eval_start .. on_checkpoint), each epoch's training time
  (on_epoch_start .. on_epoch_end, less its evaluation), the end of the loop, and the final
  test accuracy; rank 0 prints them as one JSON line;
- every rank's peak RSS (VmHWM) printed at exit.
"""
from __future__ import annotations

import os
import runpy
import sys
import time

T_PROCESS = time.time()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task as bench  # noqa: E402


class _Timings:
    """Filled by the callback; read at exit."""

    t_first_step = None
    t_loop_end = None
    eval_s = 0.0
    evaluations = 0
    eval_started = None
    epoch_started = None
    epoch_eval_s = 0.0
    epoch_train_s: list = []
    steps = None
    epochs = None
    world_size = None
    test_accuracy = None
    validation_accuracy = None
    threads = None


def _install_timing_callback() -> None:
    import torch

    from hvd_trainer import trainer as trainer_module
    from hvd_trainer.callbacks import Callback

    class TimingCallback(Callback):
        every_rank = True  # each rank reports its own timings

        def on_trainer_train_setup(self, trainer, save_path, is_coordinator):
            _Timings.t_first_step = time.time()
            _Timings.world_size = trainer.distributed.size()
            _Timings.threads = torch.get_num_threads()

        def on_epoch_start(self, trainer, progress_tracker, save_path):
            _Timings.epoch_started, _Timings.epoch_eval_s = time.time(), 0.0

        def on_epoch_end(self, trainer, progress_tracker, save_path):
            if _Timings.epoch_started is not None:
                _Timings.epoch_train_s.append(time.time() - _Timings.epoch_started - _Timings.epoch_eval_s)
                _Timings.epoch_started = None

        def on_eval_start(self, trainer, progress_tracker, save_path):
            _Timings.eval_started = time.time()

        def on_checkpoint(self, trainer, progress_tracker):
            if _Timings.eval_started is not None:
                seconds = time.time() - _Timings.eval_started
                _Timings.eval_s += seconds
                _Timings.epoch_eval_s += seconds
                _Timings.evaluations += 1
                _Timings.eval_started = None

        def on_trainer_train_teardown(self, trainer, progress_tracker, save_path, is_coordinator):
            _Timings.t_loop_end = time.time()
            _Timings.steps = progress_tracker.steps
            _Timings.epochs = progress_tracker.epoch
            field = trainer.validation_field
            for split, attr in (("test", "test_accuracy"), ("validation", "validation_accuracy")):
                history = progress_tracker.metrics_of(split).get(field, {}).get("accuracy")
                if history:
                    setattr(_Timings, attr, history[-1][2])  # the last evaluation: the final model

    base = trainer_module.Trainer

    class TimedTrainer(base):
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=list(callbacks or []) + [TimingCallback()], **kwargs)

    # cli -> commands.train_and_save imports Trainer from this module when it runs.
    trainer_module.Trainer = TimedTrainer


def _emit() -> None:
    if bench.env_rank() != 0 or _Timings.t_first_step is None or _Timings.t_loop_end is None:
        return
    loop_s = _Timings.t_loop_end - _Timings.t_first_step
    bench.emit_result({
        "t_process_start": T_PROCESS, "t_first_step": _Timings.t_first_step, "loop_s": loop_s,
        "eval_s": _Timings.eval_s, "train_s": loop_s - _Timings.eval_s, "epoch_train_s": _Timings.epoch_train_s,
        "evaluations": _Timings.evaluations,
        "steps_per_rank": _Timings.steps, "epochs": _Timings.epochs, "world_size": _Timings.world_size,
        "validation_accuracy": _Timings.validation_accuracy, "test_accuracy": _Timings.test_accuracy,
        "threads": _Timings.threads,
    })


def main() -> None:
    bench.report_rss_at_exit(bench.env_rank)
    _install_timing_callback()
    sys.argv = ["hvd_trainer"] + sys.argv[1:]
    try:
        runpy.run_module("hvd_trainer", run_name="__main__", alter_sys=True)
    finally:
        _emit()


if __name__ == "__main__":
    main()
