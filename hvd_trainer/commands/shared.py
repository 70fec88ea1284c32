"""Setup that several commands share: the strategy from the distributed section, seeding, and
JSON files written atomically (a rank killed mid-write never leaves half a file)."""
from __future__ import annotations

import json
import logging
import random
from typing import Any

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.config import DistributedConfig
from hvd_trainer.distributed import DistributedStrategy, init_dist_strategy


def start_strategy(distributed: DistributedConfig) -> DistributedStrategy:
    """Initialise the configured strategy; ranks other than 0 then log warnings only."""
    # compression, op and Horovod's knobs only mean something to Horovod; the local strategy takes no options.
    kwargs = {} if distributed.strategy == "local" else {
        "compression": distributed.compression, "op": distributed.op, "horovod": distributed.horovod}
    strategy = init_dist_strategy(distributed.strategy, **kwargs)
    _quiet_other_ranks(strategy.rank())
    return strategy


def _quiet_other_ranks(rank: int) -> None:
    # The CLI set the level from the launcher's variables; the strategy's rank is the final
    # word (a launcher whose variables hvd_trainer does not read sets none).
    if rank != 0 and logging.getLogger().level > logging.DEBUG:
        logging.getLogger().setLevel(logging.WARNING)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, so that a run is reproducible from its --random-seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")
