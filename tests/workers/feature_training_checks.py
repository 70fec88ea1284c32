"""Train a config of set, text, vector and date features for one epoch; write the final weights.

Launched by tests/test_feature_types_distributed.py under horovodrun -np 2 (batch b per rank),
and called in-process by the same test at np=1 (batch 2b): the weights must agree.

  feature_training_checks.py <spec.json> <out_dir>
spec.json: {"config": {...}, "dataset": path, "batch_size": b}
"""
import json
import os
import sys

import torch

from hvd_trainer.data.pipeline import load_training_data
from hvd_trainer.model_config import ModelConfig
from hvd_trainer.models.feature_model import build_model
from hvd_trainer.trainer import Trainer


def train_once(spec, strategy, save_path):
    mc = ModelConfig.from_dict(spec["config"])
    # Every rank holds all rows: the batcher deals them so that np=2 x b sees np=1 x 2b's samples.
    train, _, _, metadata = load_training_data(mc, strategy, dataset=spec["dataset"], shard=False)
    torch.manual_seed(0)
    model = build_model(mc, metadata)
    initial = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()
    # Adam: the date encoders project the raw year (about 2000) as Ludwig's do, which makes plain SGD diverge.
    trainer = Trainer({"epochs": 1, "batch_size": spec["batch_size"], "learning_rate": 0.001,
                       "learning_rate_scaling": "constant", "optimizer": {"type": "adam"},
                       "gradient_clipping": {"clipglobalnorm": None}, "skip_all_evaluation": True},
                      model, distributed=strategy, random_seed=11, skip_save_model=True, skip_save_progress=True,
                      skip_save_log=True)
    trainer.train(train, save_path=save_path)
    return initial, torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist()


def main(spec_path, out_dir):
    from hvd_trainer.distributed import init_dist_strategy

    strategy = init_dist_strategy("horovod")
    with open(spec_path) as fh:
        spec = json.load(fh)
    _, params = train_once(spec, strategy, os.path.join(out_dir, "run"))
    with open(os.path.join(out_dir, f"rank{strategy.rank()}.json"), "w") as fh:
        json.dump({"rank": strategy.rank(), "params": params}, fh)


if __name__ == "__main__":
    main(*sys.argv[1:3])
