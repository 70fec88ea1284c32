"""Rank-agreement checks for the correctness tests, run under horovodrun -np 2.

usage: correctness_checks.py OUT_DIR — each rank writes OUT_DIR/rank<R>.json.
"""
import json
import os
import sys

from synthetic import mlp_model

from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.errors import ConfigError
from hvd_trainer.trainer import Trainer


def learning_rates(op: str, scaling: str):
    """The trainer's LR under distributed.op `op`, or the error it refuses the combination with."""
    try:
        t = Trainer({"learning_rate": 0.01, "learning_rate_scaling": scaling, "batch_size": 8}, mlp_model(),
                    distributed=init_dist_strategy("horovod", op=op))
        return t.base_learning_rate
    except ConfigError as e:
        return f"ConfigError: {e}"


def main(out_dir):
    s = init_dist_strategy("horovod")
    res = {"size": s.size()}
    for op in ("average", "adasum", "sum"):
        for scaling in ("linear", "constant"):
            res[f"{op}/{scaling}"] = learning_rates(op, scaling)
    with open(os.path.join(out_dir, f"rank{s.rank()}.json"), "w") as fh:
        json.dump(res, fh)


if __name__ == "__main__":
    main(sys.argv[1])
