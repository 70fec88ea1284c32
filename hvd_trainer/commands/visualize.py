"""`visualize`: learning curves (PNG) from a run's training_statistics.json."""
from __future__ import annotations

import os

from hvd_trainer.errors import ConfigError
from hvd_trainer.options import VisualizeOptions
from hvd_trainer.visualize import learning_curves


def run(options: VisualizeOptions) -> int:
    if not os.path.exists(options.training_statistics):
        raise ConfigError(f"{options.training_statistics} does not exist; pass the training_statistics.json of a run "
                          "(results/<experiment>_<model>/training_statistics.json).")
    path = learning_curves(options.training_statistics, options.output)
    print(f"Learning curves written to {path}", flush=True)
    return 0
