"""Setup that several commands share: the strategy from the distributed section, agreeing on
what rank 0 read before any rank acts, seeding, and JSON files written atomically (a rank
killed mid-write never leaves half a file)."""
from __future__ import annotations

import contextlib
import json
import logging
import random
from typing import Any, Callable, Iterator, Sequence, Tuple, TypeVar

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.config import DistributedConfig
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed import DistributedStrategy, init_dist_strategy
from hvd_trainer.distributed.elastic import elastic_requested
from hvd_trainer.errors import ConfigError
from hvd_trainer.job import command_line_distributed

T = TypeVar("T")


def start_strategy(distributed: DistributedConfig) -> DistributedStrategy:
    """Initialise the configured strategy; ranks other than 0 then log warnings only."""
    # compression, op and Horovod's knobs only mean something to Horovod; the local strategy takes no options.
    kwargs = {} if distributed.strategy == "local" else {
        "compression": distributed.compression, "op": distributed.op, "horovod": distributed.horovod,
        "elastic": distributed.elastic, "elastic_commit_steps": distributed.elastic_commit_steps}
    strategy = init_dist_strategy(distributed.strategy, **kwargs)
    if distributed.elastic and not strategy.is_elastic():
        elastic_requested(True, {})  # distributed.elastic: true without Horovod: the same clear error
    _quiet_other_ranks(strategy.rank())
    return strategy


def start_and_agree(overrides: Sequence[str], name: str, read: Callable[[], T],
                    distributed_of: Callable[[T], DistributedConfig]) -> Tuple[DistributedStrategy, T]:
    """The strategy, and what `read()` returned on rank 0 (run there only), on every rank.

    The job's config may exist on rank 0's host only (a run's model_hyperparameters.json), so the
    ranks cannot know its distributed section before they can talk: they start as the command
    line says (distributed.* of --set over the defaults; auto is Horovod under a launcher), agree
    on what rank 0 read, then switch to the job's own section (`distributed_of`) where it differs.
    """
    first = command_line_distributed(overrides)
    strategy = start_strategy(first)
    joined = strategy.elastic_joined()  # a process joining a running elastic job: what rank 0 read at its start
    found = joined["found"] if joined and "found" in joined else run_on_coordinator(strategy, name, read)
    wanted = distributed_of(found)
    return (strategy if wanted == first else start_strategy(wanted)), found


def _quiet_other_ranks(rank: int) -> None:
    # The CLI set the level from the launcher's variables; the strategy's rank is the final
    # word (a launcher whose variables hvd_trainer does not read sets none).
    root = logging.getLogger()
    if rank != 0 and root.level > logging.DEBUG:
        # Kept for elastic training, where this process may become rank 0 (elastic_training.py).
        if not hasattr(root, "hvd_trainer_coordinator_level"):
            root.hvd_trainer_coordinator_level = root.level
        root.setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so that a run is reproducible from its --random-seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


@contextlib.contextmanager
def writing_into(directory: str) -> Iterator[None]:
    """An OSError while writing a command's files (a full disk, no permission) as a one-paragraph error."""
    try:
        yield
    except OSError as e:
        raise ConfigError(f"Results cannot be written into {directory} ({e.strerror or e}: {e.filename or directory}). "
                          "Free space there, fix its permissions, or choose another output directory.") from e
