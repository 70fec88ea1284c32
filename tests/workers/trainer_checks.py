"""Trainer scenarios run under horovodrun -np 2; each rank writes rank<R>.json.

Scenarios: convergence (+ bit-identical weights), metrics over all ranks' data, the np=2 vs
np=1 averaging equivalence, early stop asked by one rank only, a NaN loss on one rank, and the
spacing of the control agreements when one rank's steps are slower.
"""
import json
import os
import sys
import time

import numpy as np
import torch

from synthetic import LBFGS_FULL_BATCH, classification_columns, datasets, flat_params, mlp_model

from hvd_trainer.callbacks import Callback
from hvd_trainer.data import Dataset
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.errors import TrainingDivergedError
from hvd_trainer.trainer import RemoteTrainer, Trainer


class StopOnRank(Callback):
    """Asks for an early stop at the given evaluation, on one rank only."""

    def __init__(self, rank, at_eval):
        self.rank, self.at_eval, self.evals = rank, at_eval, 0

    def should_early_stop(self, trainer, progress_tracker, is_coordinator):
        self.evals += 1
        return trainer.distributed.rank() == self.rank and self.evals >= self.at_eval


class PoisonOnRank(Callback):
    """Makes one rank's next batch NaN at a given step."""
    every_rank = True  # a per-rank hook: it must run on the rank it names

    def __init__(self, rank, step):
        self.rank, self.step = rank, step

    def on_batch_start(self, trainer, progress_tracker, save_path):
        if trainer.distributed.rank() == self.rank and progress_tracker.steps == self.step:
            trainer.model.module[0].weight.data[0, 0] = float("nan")


class SlowRank(Callback):
    """One rank sleeps after each batch: its steps take longer than the other's."""
    every_rank = True  # a per-rank hook: it must run on the rank it names

    def __init__(self, rank, seconds):
        self.rank, self.seconds = rank, seconds

    def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
        if trainer.distributed.rank() == self.rank:
            time.sleep(self.seconds)


class CountHooks(Callback):
    """Counts the hooks this rank runs (Ludwig's contract: the coordinator's, unless every_rank)."""

    def __init__(self, every_rank=False):
        self.every_rank = every_rank
        self.counts = {"on_trainer_train_setup": 0, "on_epoch_end": 0, "on_batch_end": 0, "on_eval_end": 0,
                       "should_early_stop": 0}

    def on_trainer_train_setup(self, trainer, save_path, is_coordinator):
        self.counts["on_trainer_train_setup"] += 1

    def on_epoch_end(self, trainer, progress_tracker, save_path):
        self.counts["on_epoch_end"] += 1

    def on_batch_end(self, trainer, progress_tracker, save_path, sync_step=True):
        self.counts["on_batch_end"] += 1

    def on_eval_end(self, trainer, progress_tracker, save_path):
        self.counts["on_eval_end"] += 1

    def should_early_stop(self, trainer, progress_tracker, is_coordinator):
        self.counts["should_early_stop"] += 1
        return False


def record_control_steps(trainer):
    """The optimizer steps at which `trainer` submits its control agreements."""
    steps = []
    submit = trainer.control.submit

    def recording():
        steps.append(trainer.control.optimizer_steps)
        submit()

    trainer.control.submit = recording
    return steps


def main(out_dir):
    s = init_dist_strategy("horovod")
    r = s.rank()
    res = {"rank": r}
    train, val, test = datasets()

    # 1. convergence, metrics over all ranks, bit-identical weights
    t = Trainer({"epochs": 15, "batch_size": 16, "learning_rate": 0.01, "early_stop": -1}, mlp_model(seed=r),
                distributed=s, random_seed=7)
    _, tr, va, te = t.train(train, val, test, save_path=os.path.join(out_dir, "converge"))
    res["test_accuracy"] = te["y"]["accuracy"][-1][2]
    res["final_params"] = flat_params(t.model)
    synced = t.evaluation(val, "validation", t_pt(t), 16)
    with torch.no_grad():
        t.model.eval()
        logits = t.model({"x": torch.as_tensor(val.columns["x"])})["y"]
    res["val_accuracy_synced"] = synced["y"]["accuracy"]
    res["val_accuracy_whole_set"] = float((logits.argmax(-1).numpy() == val.columns["y"]).mean())

    # 2. np=2 with batch b == np=1 with batch 2b (checked against a one-process run by the test)
    eq_train = Dataset(classification_columns(160, 5), name="eq")
    t = Trainer({"epochs": 1, "batch_size": 8, "learning_rate": 0.05, "learning_rate_scaling": "constant",
                 "optimizer": {"type": "sgd"}, "gradient_clipping": {"clipglobalnorm": None}, "skip_all_evaluation": True},
                mlp_model(seed=3), distributed=s, random_seed=11, skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    t.train(eq_train, save_path=os.path.join(out_dir, "eq"))
    res["equivalence_params"] = flat_params(t.model)

    # 3. early stop asked by rank 1 only, at its 2nd evaluation
    t = Trainer({"epochs": 10, "batch_size": 16, "steps_per_checkpoint": 5, "early_stop": -1}, mlp_model(), distributed=s,
                callbacks=[StopOnRank(1, 2)], skip_save_log=True)
    t.train(train, val, save_path=os.path.join(out_dir, "early"))
    res["early_stop_steps"] = t_pt(t).steps

    # 4. a NaN appears on rank 1 only: both ranks must stop with the same error
    t = Trainer({"epochs": 5, "batch_size": 16, "early_stop": -1}, mlp_model(), distributed=s,
                callbacks=[PoisonOnRank(1, 7)], skip_save_log=True)
    try:
        t.train(train, val, save_path=os.path.join(out_dir, "nan"))
        res["nan_error"] = None
    except TrainingDivergedError as e:
        res["nan_error"] = str(e)

    # 5. lbfgs is data-parallel: each closure call averages the loss and gradients over the ranks
    t = Trainer(LBFGS_FULL_BATCH, mlp_model(seed=3), distributed=s, random_seed=11, skip_save_model=True,
                skip_save_progress=True, skip_save_log=True)
    t.train(eq_train, save_path=os.path.join(out_dir, "lbfgs"))
    res["lbfgs_params"] = flat_params(t.model)

    # 6. RemoteTrainer: results come back from rank 0 only
    rt = RemoteTrainer(config={"epochs": 1, "batch_size": 16}, model=mlp_model(), distributed=s, skip_save_log=True)
    out = rt.train(train, val, save_path=os.path.join(out_dir, "remote"))
    res["remote_result_is_none"] = out is None

    # 7. batch size tuning: one value everywhere, weights and optimizer state untouched
    t = Trainer({"batch_size": "auto", "epochs": 1}, mlp_model(seed=4), distributed=s, skip_save_log=True)
    before = flat_params(t.model)
    res["tuned_batch_size"] = t.tune_batch_size(train)
    res["tuner_restored_weights"] = flat_params(t.model) == before
    res["tuner_optimizer_state_empty"] = len(t.optimizer.state_dict()["state"]) == 0

    # 8. control agreements: spaced by the slowest rank's step time, at the same steps everywhere
    t = Trainer({"epochs": 2, "batch_size": 4, "skip_all_evaluation": True}, mlp_model(), distributed=s,
                callbacks=[SlowRank(1, 0.01)], skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    t.control.interval_seconds = 0.05
    res["control_steps"] = record_control_steps(t)
    t.train(train, save_path=os.path.join(out_dir, "control"))
    res["control_total_steps"] = t_pt(t).steps

    # 9. callbacks: hooks on the coordinator only, unless a callback asks for every rank
    default, everywhere = CountHooks(), CountHooks(every_rank=True)
    t = Trainer({"epochs": 2, "batch_size": 16}, mlp_model(), distributed=s, callbacks=[default, everywhere],
                skip_save_model=True, skip_save_progress=True, skip_save_log=True)
    t.train(train, val, save_path=os.path.join(out_dir, "hooks"))
    res["hook_counts"], res["hook_counts_every_rank"] = default.counts, everywhere.counts

    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as fh:
        json.dump(res, fh)


def t_pt(trainer):
    return trainer.last_progress_tracker


if __name__ == "__main__":
    main(sys.argv[1])
