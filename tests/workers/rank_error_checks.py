"""Errors that happen on one rank only, run under horovodrun -np 2: every rank must end with the same error.

usage: rank_error_checks.py SCENARIO OUT_DIR [SAVE_PATH]

Each rank writes OUT_DIR/<scenario>.rank<R>.json: the error class and message it ended with.
"""
import json
import os
import sys

from synthetic import datasets, mlp_model

from hvd_trainer.callbacks import Callback
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.trainer import Trainer


class FailOnRank(Callback):
    """Raises in one hook on one rank (every_rank: the hook runs wherever the scenario says)."""
    every_rank = True

    def __init__(self, rank, hook, at_step=0):
        self.rank, self.hook, self.at_step = rank, hook, at_step

    def on_eval_end(self, trainer, progress_tracker, save_path):
        if self.hook == "on_eval_end" and trainer.distributed.rank() == self.rank:
            raise ValueError(f"callback failed on rank {self.rank} after an evaluation")

    def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
        if self.hook == "on_batch_end" and trainer.distributed.rank() == self.rank and progress_tracker.steps == self.at_step:
            raise ValueError(f"callback failed on rank {self.rank} at step {self.at_step}")


class CorruptBestOnRank0(Callback):
    """Rank 0's best.ckpt turns to garbage just before train() loads it back."""

    def on_trainer_train_teardown(self, trainer, progress_tracker, save_path, is_coordinator):
        if is_coordinator:
            with open(os.path.join(save_path, "training_checkpoints", "best.ckpt"), "wb") as fh:
                fh.write(b"not a checkpoint")


SCENARIOS = {
    # name: (trainer config additions, callbacks, hidden units)
    "unwritable_output": ({}, [], 16),
    "disk_full": ({"checkpoint_in_background": True}, [], 512),
    "disk_full_in_loop": ({"checkpoint_in_background": False}, [], 512),
    "corrupt_best": ({}, [CorruptBestOnRank0()], 16),
    "callback_on_rank0": ({}, [FailOnRank(0, "on_eval_end")], 16),
    "callback_on_rank1": ({}, [FailOnRank(1, "on_batch_end", at_step=5)], 16),
}


def main(scenario, out_dir, save_path):
    s = init_dist_strategy("horovod")
    extra, callbacks, hidden = SCENARIOS[scenario]
    train, val, _ = datasets(n_train=480, n_val=64)
    config = {"epochs": 3, "batch_size": 16, "early_stop": -1, **extra}
    result = {"error": None, "message": None}
    try:
        t = Trainer(config, mlp_model(hidden=hidden), distributed=s, callbacks=callbacks,
                    skip_save_log=not scenario.startswith("disk_full"))  # a full disk hits the event files too
        t.train(train, val, save_path=save_path)
    except Exception as e:  # the scenario's point: which error each rank ends with
        result = {"error": type(e).__name__, "message": str(e)}
    with open(os.path.join(out_dir, f"{scenario}.rank{s.rank()}.json"), "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
