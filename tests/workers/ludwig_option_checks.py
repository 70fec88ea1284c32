"""What each rank gets from Ludwig's options (balancing, column splits, decoders, losses), under horovodrun or alone.

Launched by tests/test_ludwig_options.py, at np=2 (horovodrun) and np=1 (plain python):

  ludwig_option_checks.py data <spec.json> <out_dir>    load each scenario's dataset sharded; per rank: the
                                                        row ids of each split and the training target's counts
  ludwig_option_checks.py grads <spec.json> <out_dir>   one model from the config; each rank's gradient of the
                                                        mean loss on its half of the rows (rows rank::size, all
                                                        ranks reading every row), averaged over ranks

spec.json: {"scenarios": {name: {"config": {...}, "dataset": path}}}  (grads: one scenario named "model")
"""
import json
import os
import sys
from collections import Counter

import numpy as np
import torch

from hvd_trainer.data.pipeline import ROW_ID, load_training_data
from hvd_trainer.distributed import init_dist_strategy
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.models.feature_model import build_model


def data(strategy, spec):
    record = {}
    for name, scenario in spec["scenarios"].items():
        mc = ModelConfig.from_dict(scenario["config"])
        train, val, test, _ = load_training_data(mc, strategy, dataset=scenario["dataset"])
        target = mc.output_features[0].name
        splits = (("training", train), ("validation", val), ("test", test))
        record[name] = {
            "ids": {split: (ds.columns[ROW_ID].tolist() if ds is not None else []) for split, ds in splits},
            "targets": {split: ({str(k): v for k, v in Counter(np.asarray(ds.columns[target]).tolist()).items()}
                                if ds is not None else {}) for split, ds in splits},
        }
        record[name]["training_target"] = record[name]["targets"]["training"]
    return record


def grads(strategy, spec):
    scenario = spec["scenarios"]["model"]
    mc = ModelConfig.from_dict(scenario["config"])
    train, _, _, metadata = load_training_data(mc, strategy, dataset=scenario["dataset"], shard=False)
    torch.manual_seed(0)
    model = build_model(mc, metadata)
    rows = np.arange(strategy.rank(), len(train), strategy.size())
    batch = train.take(rows)
    inputs = model.input_tensors(batch, torch.device("cpu"))
    targets = {n: f.target_tensor(batch[n]) for n, f in model.output_features.items()}
    loss, _ = model.train_loss(targets, model(inputs))
    loss.backward()
    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    averaged = strategy.allreduce(flat, op="average")
    return {"grad": averaged.tolist(), "loss": float(strategy.allreduce(loss.detach().reshape(1), op="average")),
            "parameters": [n for n, _ in model.named_parameters()]}


def main(mode, spec_path, out_dir):
    strategy = init_dist_strategy("auto")
    with open(spec_path) as fh:
        spec = json.load(fh)
    record = {"data": data, "grads": grads}[mode](strategy, spec)
    with open(os.path.join(out_dir, f"rank{strategy.rank()}.json"), "w") as fh:
        json.dump(record, fh)


if __name__ == "__main__":
    main(*sys.argv[1:4])
