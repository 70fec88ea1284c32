"""batch_size: auto — find the batch size with the best training (or evaluation) throughput.

Doubling from 1 while throughput (samples/s, median of timed steps) keeps rising by more than
a small tolerance (one doubling without gain is forgiven, since a single trial can be noisy), capped at max_batch_size, 20% of the training set, and MAX_CPU_BATCH_SIZE
without a GPU. Under Horovod every trial step runs a gradient allreduce, so every rank must run
the same trials: after each trial the ranks exchange (out of memory?, throughput) with one
allgather and all take the same decision from the same numbers. Weights, optimizer and
scheduler are snapshotted before and restored after, so tuning leaves no trace on the model.

The tuner knows nothing of the Trainer: it is handed a step function and a snapshot/restore pair.
"""
from __future__ import annotations

import copy
import logging
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from hvd_trainer.distributed.base import DistributedStrategy

logger = logging.getLogger(__name__)

#: A doubling must raise throughput by more than this fraction to count as an improvement.
TOLERANCE = 0.05
#: Doublings in a row without gain that end the search.
PATIENCE = 2
WARMUP_STEPS = 3
TIMED_STEPS = 10
MAX_TRIALS = 20
#: Without a GPU, tuning stops here: beyond it CPU throughput no longer improves and memory,
#: not speed, becomes the limit (Ludwig uses the same cap).
MAX_CPU_BATCH_SIZE = 128


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


def max_batch_size_for(max_batch_size: int, rows_per_rank: int, on_gpu: bool) -> int:
    """The largest batch size worth trying: the config's cap, 20% of a rank's rows, MAX_CPU_BATCH_SIZE on CPU."""
    cap = max_batch_size if on_gpu else min(max_batch_size, MAX_CPU_BATCH_SIZE)
    return max(1, min(cap, int(rows_per_rank * 0.2)))


def tune_batch_size(
    step_for: Callable[[int], Callable[[], None]],
    snapshot: Callable[[], Any],
    restore: Callable[[Any], None],
    distributed: DistributedStrategy,
    limit: int,
    what: str = "training",
    device: Optional[torch.device] = None,
) -> int:
    """Run the search on every rank and return the same batch size everywhere.

    step_for(b) builds one trial step at batch size b (a training step, or a forward pass for
    the evaluation batch size); snapshot() / restore(s) save and put back whatever the trials
    change (weights, optimizer, scheduler), so that tuning leaves no trace on the model.
    """
    if distributed.is_coordinator():
        logger.info("Tuning the %s batch size (up to %d per rank)...", what, limit)
    on_gpu = device is not None and device.type == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)

    def measure(batch_size: int) -> Tuple[bool, float]:
        step = step_for(batch_size)
        try:
            seconds = _median_step_time(step, sync)
        except torch.OutOfMemoryError:
            # Another rank may still be inside an allreduce of this trial; the tuner only
            # reaches this on devices where OOM hits every rank at the same size.
            if on_gpu:
                torch.cuda.empty_cache()
            return True, 0.0
        return False, batch_size / seconds

    def agree(oom: bool, throughput: float) -> Tuple[bool, float]:
        results = distributed.allgather_object((oom, throughput), name="hvd_trainer.tune_batch_size")
        return any(o for o, _ in results), min(t for _, t in results)

    saved = snapshot()
    try:
        best, trials = select_best_batch_size(limit, measure, agree)
    finally:
        restore(saved)
    # Every rank computed the same value from the same gathered numbers; rank 0's is broadcast
    # anyway so that the choice is, by construction, one value everywhere.
    best = distributed.broadcast_object(best if distributed.is_coordinator() else None,
                                        name="hvd_trainer.best_batch_size")
    if distributed.is_coordinator():
        table = ", ".join(f"{b}: {t:.0f}/s" for b, t in trials)
        logger.info("Selected %s batch size %d per rank (throughput by batch size: %s).", what, best, table)
    return int(best)


def sample_batch_trials(model, compiled_model: torch.nn.Module, device: torch.device,
                        train_step: Callable[[Dict[str, torch.Tensor], Dict[str, torch.Tensor]], Any],
                        for_evaluation: bool) -> Callable[[int], Callable[[], None]]:
    """step_for(b): one training step (or a forward pass, for evaluation) on a sample batch of b rows."""
    def step_for(batch_size: int) -> Callable[[], None]:
        inputs, targets = model.create_sample_batch(batch_size)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        targets = {k: v.to(device) for k, v in targets.items()}
        if not for_evaluation:
            return lambda: train_step(inputs, targets)

        def forward() -> None:
            with torch.no_grad():
                compiled_model(inputs)
        return forward
    return step_for


def training_state_snapshot(model, optimizer: torch.optim.Optimizer, scheduler,
                            distributed: DistributedStrategy) -> Tuple[Callable[[], Any], Callable[[Any], None]]:
    """snapshot() / restore(s) of what tuning trials change: weights, optimizer, scheduler, metrics."""
    def snapshot() -> Dict[str, Any]:
        return {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
                "scheduler": scheduler.state_dict()}

    def restore(saved: Dict[str, Any]) -> None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        distributed.zero_grad(optimizer)
        model.reset_metrics()
        model.train()
    return snapshot, restore


def tune_model_batch_size(model, compiled_model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                          train_step: Callable[..., Any], distributed: DistributedStrategy, device: torch.device,
                          max_batch_size: int, training_set, for_evaluation: bool = False) -> int:
    """tune_batch_size for a model and its optimizer: trials on sample batches, everything restored after."""
    rows = training_set.global_size(distributed) // max(1, distributed.size())
    limit = max_batch_size_for(max_batch_size, rows, torch.cuda.is_available())
    # The cap can differ between ranks (a GPU on some hosts only): the smallest one holds for all.
    limit = min(distributed.allgather_object(limit, name="hvd_trainer.tune_batch_size_limit"))
    trials = sample_batch_trials(model, compiled_model, device, train_step, for_evaluation)
    snapshot, restore = training_state_snapshot(model, optimizer, scheduler, distributed)
    compiled_model.train(not for_evaluation)
    return tune_batch_size(trials, snapshot, restore, distributed, limit,
                           "evaluation" if for_evaluation else "training", device)
