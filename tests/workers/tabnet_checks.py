"""`train` of a tabnet config under horovodrun -np 2, keeping the trained model; each rank writes rank<R>.json.

Usage: tabnet_checks.py OUT_DIR <train arguments...>

What each rank writes: a digest of every parameter and buffer of its model after train() (the
ranks must hold one model), and the running mean of one ghost batch norm after a training-mode
forward pass on the rank's own rows (the ranks' statistics now differ) and after
average_batch_norm_statistics (they must agree again, as the mean of the two).
"""
import hashlib
import json
import sys

import numpy as np
import torch

from hvd_trainer.commands import train as train_command
from hvd_trainer.models.ghost_batch_norm import GhostBatchNorm
from hvd_trainer.options import parse_run_options


def digests(model: torch.nn.Module) -> dict:
    return {name: hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for name, t in model.state_dict().items()}


def main() -> None:
    out, argv = sys.argv[1], sys.argv[2:]
    options = parse_run_options(argv).command
    strategy, plan = train_command.start_and_agree(
        options.overrides, "tabnet_checks.plan", lambda: train_command.plan_run(options), lambda f: f.job.distributed)
    layout = train_command.new_run_layout(options, strategy)
    result = train_command.train_and_save(plan.job, options, strategy, layout)
    model = result.trainer.model
    rank = strategy.rank()
    report = {"exit_code": result.exit_code, "state": digests(model),
              "ghost_norms": sum(isinstance(m, GhostBatchNorm) for m in model.modules())}

    norm = next(m for m in model.modules() if isinstance(m, GhostBatchNorm))
    width = model.combiner.tabnet.input_norm.num_features
    model.train()
    with torch.no_grad():  # each rank its own rows: the running statistics now follow different data
        rows = torch.from_numpy(np.random.default_rng(100 + rank).normal(size=(700, width)).astype(np.float32))
        model.combiner([rows * (1 + rank)])
    report["diverged"] = norm.running_mean.tolist()
    strategy.average_batch_norm_statistics(model)
    report["averaged"] = norm.running_mean.tolist()
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
