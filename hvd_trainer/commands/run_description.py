"""description.json: how a run was started (command, host, world size, data, versions, config)."""
from __future__ import annotations

import datetime
import platform
import socket
import sys
from typing import Any, Dict

from hvd_trainer import __version__
from hvd_trainer.distributed.versions import horovod_version
from hvd_trainer.options import TrainOptions

DATA_OPTIONS = ("dataset", "training_set", "validation_set", "test_set")


def describe_run(config: Dict[str, Any], options: TrainOptions, world_size: int) -> Dict[str, Any]:
    import torch

    return {
        "command": " ".join(sys.argv),
        "start_time": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "world_size": world_size,
        "random_seed": options.random_seed,
        "data": {k: getattr(options, k) for k in DATA_OPTIONS},
        "versions": {"hvd_trainer": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "horovod": horovod_version()},
        "config": config,
    }
