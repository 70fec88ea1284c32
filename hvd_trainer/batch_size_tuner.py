"""batch_size: auto — find the batch size with the best training (or evaluation) throughput.

Doubling from 1 while throughput (samples/s, median of timed steps) keeps rising by more than
a small tolerance (one doubling without gain is forgiven, since a single trial can be noisy), capped at max_batch_size, 20% of the training set, and MAX_CPU_BATCH_SIZE
without a GPU. Under Horovod every trial step runs a gradient allreduce, so every rank must run
the same trials: after each trial the ranks exchange (out of memory?, throughput) with one
allgather and all take the same decision from the same numbers. Weights, optimizer and
scheduler are snapshotted before and restored after, so tuning leaves no trace on the model.
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Callable, List, Tuple

import torch

logger = logging.getLogger(__name__)

#: A doubling must raise throughput by more than this fraction to count as an improvement.
TOLERANCE = 0.05
#: Doublings in a row without gain that end the search.
PATIENCE = 2
WARMUP_STEPS = 3
TIMED_STEPS = 10
MAX_TRIALS = 20


def select_best_batch_size(
    max_batch_size: int,
    measure: Callable[[int], Tuple[bool, float]],
    agree: Callable[[bool, float], Tuple[bool, float]] = lambda oom, t: (oom, t),
    tolerance: float = TOLERANCE,
    max_trials: int = MAX_TRIALS,
    patience: int = PATIENCE,
) -> Tuple[int, List[Tuple[int, float]]]:
    """The batch size where doubling stops paying off, and the (batch size, throughput) trials.

    measure(b) -> (out_of_memory, samples_per_second) on this rank; agree() turns the local
    result into the job's (any rank out of memory, slowest rank's throughput).
    """
    best_size, best_throughput = 1, 0.0
    trials: List[Tuple[int, float]] = []
    size, misses = 1, 0
    for _ in range(max_trials):
        if size > max_batch_size:
            break
        oom, throughput = agree(*measure(size))
        if oom:
            break
        trials.append((size, throughput))
        if throughput > best_throughput * (1 + tolerance):
            best_size, best_throughput, misses = size, throughput, 0
        else:
            misses += 1
            if misses >= patience:
                break
        size *= 2
    return best_size, trials


def _median_step_time(step: Callable[[], None], sync: Callable[[], None]) -> float:
    for _ in range(WARMUP_STEPS):
        step()
    times: List[float] = []
    # A fixed count, never a time budget: under Horovod each step is an allreduce, and ranks
    # that ran different numbers of steps would wait on each other forever.
    for _ in range(TIMED_STEPS):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def max_batch_size_for(trainer, dataset_rows: int) -> int:
    cap = trainer.config.max_batch_size
    if not torch.cuda.is_available():
        from hvd_trainer.trainer import MAX_CPU_BATCH_SIZE

        cap = min(cap, MAX_CPU_BATCH_SIZE)
    return max(1, min(cap, int(dataset_rows * 0.2)))


def tune_batch_size(trainer, training_set, for_evaluation: bool = False) -> int:
    """Run the search on every rank and return the same batch size everywhere."""
    distributed = trainer.distributed
    model = trainer.model
    rows = training_set.global_size(distributed) // max(1, distributed.size())
    limit = max_batch_size_for(trainer, rows)
    what = "evaluation" if for_evaluation else "training"
    if trainer.is_coordinator():
        logger.info("Tuning the %s batch size (up to %d per rank)...", what, limit)

    snapshot = {
        "model": copy.deepcopy(model.state_dict()),
        "optimizer": copy.deepcopy(trainer.optimizer.state_dict()),
        "scheduler": trainer.scheduler.state_dict(),
    }
    device = trainer.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def measure(batch_size: int) -> Tuple[bool, float]:
        inputs, targets = model.create_sample_batch(batch_size)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        targets = {k: v.to(device) for k, v in targets.items()}
        if for_evaluation:
            def step():
                with torch.no_grad():
                    trainer.dist_model(inputs)
        else:
            def step():
                trainer.train_step(inputs, targets)
        try:
            seconds = _median_step_time(step, sync)
        except torch.OutOfMemoryError:
            # Another rank may still be inside an allreduce of this trial; the tuner only
            # reaches this on devices where OOM hits every rank at the same size.
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return True, 0.0
        return False, batch_size / seconds

    def agree(oom: bool, throughput: float) -> Tuple[bool, float]:
        results = distributed.allgather_object((oom, throughput), name="hvd_trainer.tune_batch_size")
        return any(o for o, _ in results), min(t for _, t in results)

    trainer.dist_model.train(not for_evaluation)
    try:
        best, trials = select_best_batch_size(limit, measure, agree)
    finally:
        model.load_state_dict(snapshot["model"])
        trainer.optimizer.load_state_dict(snapshot["optimizer"])
        trainer.scheduler.load_state_dict(snapshot["scheduler"])
        distributed.zero_grad(trainer.optimizer)
        model.reset_metrics()
        trainer.dist_model.train()
    # Every rank computed the same value from the same gathered numbers; rank 0's is broadcast
    # anyway so that the choice is, by construction, one value everywhere.
    best = distributed.broadcast_object(best if trainer.is_coordinator() else None, name="hvd_trainer.best_batch_size")
    if trainer.is_coordinator():
        table = ", ".join(f"{b}: {t:.0f}/s" for b, t in trials)
        logger.info("Selected %s batch size %d per rank (throughput by batch size: %s).", what, best, table)
    return int(best)
