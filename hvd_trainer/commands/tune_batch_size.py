"""`tune-batch-size`: the per-rank batch size with the best throughput, without training a run."""
from __future__ import annotations

from hvd_trainer.commands.shared import seed_everything, start_and_agree
from hvd_trainer.job import JobConfig
from hvd_trainer.options import TuneBatchSizeOptions


def run(options: TuneBatchSizeOptions) -> int:
    from hvd_trainer.data.pipeline import load_training_data
    from hvd_trainer.models.feature_model import build_model
    from hvd_trainer.trainer import Trainer

    # The config file may exist on rank 0's host only: rank 0 reads it, every rank gets the result.
    strategy, job = start_and_agree((), "hvd_trainer.tune_config", lambda: JobConfig.load(options.config),
                                    lambda found: found.distributed)
    train, _, _, metadata = load_training_data(job.model, strategy, dataset=options.dataset,
                                               random_seed=options.random_seed)
    seed_everything(options.random_seed)
    trainer = Trainer(job.trainer, build_model(job.model, metadata), distributed=strategy,
                      random_seed=options.random_seed, skip_save_model=True, skip_save_progress=True,
                      skip_save_log=True)
    best = trainer.tune_batch_size(train)
    if strategy.is_coordinator():
        print(f"Best batch size per rank: {best} ({best * strategy.size()} per step over {strategy.size()} rank(s)). "
              f"Set trainer.batch_size: {best} to skip tuning next time.", flush=True)
    return 0
