"""An elastic run through the Python API that records which rows every optimizer step trained on.

Run under horovodrun's elastic mode: python elastic_checks.py OUT_DIR PAUSE_AT_STEP
Every process appends one JSON line per batch to OUT_DIR/rows.<pid>.jsonl: {"step", "epoch", "size",
"rows"}. At step PAUSE_AT_STEP (once per process) every rank writes OUT_DIR/paused.<pid> and waits for
OUT_DIR/go, so that the test can change the world at a known step. Rank 0 writes OUT_DIR/result.json
at the end (the final tracker and the training rows).
"""
import json
import logging
import os
import sys
import time

import numpy as np

from synthetic import classification_columns, mlp_model

from hvd_trainer.callbacks import Callback
from hvd_trainer.data import Dataset
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.trainer import Trainer

N_TRAIN, BATCH, EPOCHS, COMMIT_STEPS = 600, 10, 2, 3


class Position(Callback):
    """Where the loop stands (read by the recording model), and the pause at one step."""
    every_rank = True

    def __init__(self, out_dir, pause_at):
        self.out_dir, self.pause_at, self.paused = out_dir, pause_at, False
        self.step, self.epoch = 0, 0

    def on_batch_start(self, trainer, progress_tracker, save_path):
        self.step, self.epoch = progress_tracker.steps + 1, progress_tracker.epoch

    def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
        if self.paused or progress_tracker.steps != self.pause_at:
            return
        self.paused = True
        with open(os.path.join(self.out_dir, f"paused.{os.getpid()}"), "w") as f:
            f.write(str(trainer.distributed.rank()))
        deadline = time.monotonic() + 180
        while not os.path.exists(os.path.join(self.out_dir, "go")) and time.monotonic() < deadline:
            time.sleep(0.1)


def main(out_dir, pause_at):
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the trainer's lines (rank 0 logs them)
    strategy = init_dist_strategy("horovod", elastic=True, elastic_commit_steps=COMMIT_STEPS)
    columns = classification_columns(N_TRAIN, 0)
    columns["row"] = np.arange(N_TRAIN)
    training = Dataset(columns, name="training")
    position = Position(out_dir, pause_at)
    model = mlp_model()
    record = open(os.path.join(out_dir, f"rows.{os.getpid()}.jsonl"), "a")
    take = model.input_tensors

    def recording_input_tensors(batch, device):
        record.write(json.dumps({"step": position.step, "epoch": position.epoch, "size": strategy.size(),
                                 "rows": batch["row"].tolist()}) + "\n")
        record.flush()
        return take(batch, device)

    model.input_tensors = recording_input_tensors
    trainer = Trainer({"epochs": EPOCHS, "batch_size": BATCH, "learning_rate": 0.01, "should_shuffle": True},
                      model, callbacks=[position], distributed=strategy, skip_save_log=True)
    trainer.train(training, save_path=os.path.join(out_dir, "model"))
    if strategy.rank() == 0:
        pt = trainer.last_progress_tracker
        with open(os.path.join(out_dir, "result.json"), "w") as f:
            json.dump({"world_size": pt.world_size, "epoch": pt.epoch, "steps": pt.steps, "n": N_TRAIN,
                       "batch": BATCH}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
