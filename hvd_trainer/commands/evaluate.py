"""`evaluate`: metrics of a trained model on a dataset (or one split of it), as evaluation_statistics.json."""
from __future__ import annotations

import os

from hvd_trainer.commands.shared import write_json
from hvd_trainer.commands.trained_model import load_trained_model
from hvd_trainer.options import EvaluateOptions
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.summary import format_metrics_table


def run(options: EvaluateOptions) -> int:
    from hvd_trainer.data.pipeline import load_inference_data
    from hvd_trainer.predictor import Predictor

    trained = load_trained_model(options.model_path)
    strategy, model = trained.strategy, trained.model
    dataset = load_inference_data(trained.job.model, trained.metadata, options.dataset, strategy, shard=True,
                                  split=options.split)
    metrics = Predictor(model, model, options.batch_size, strategy, "cpu").batch_evaluation(dataset)
    if strategy.is_coordinator():
        # --output-directory takes the file that would otherwise go into the run directory.
        out = RunLayout(options.output_directory) if options.output_directory else trained.layout
        os.makedirs(out.root, exist_ok=True)
        write_json(out.evaluation_statistics, metrics)
        print(format_metrics_table({"test": metrics}), flush=True)
        print(f"Metrics written to {out.evaluation_statistics}", flush=True)
    return 0
