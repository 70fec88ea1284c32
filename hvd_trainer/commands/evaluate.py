"""`evaluate`: metrics of a trained model on a dataset (or one split of it), as evaluation_statistics.json."""
from __future__ import annotations

import os

from hvd_trainer.commands.shared import write_json, writing_into
from hvd_trainer.commands.trained_model import load_trained_model
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.options import EvaluateOptions
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.summary import format_metrics_table

#: The column of the printed table when the whole dataset is evaluated (no --split).
WHOLE_DATASET_LABEL = "test"


def run(options: EvaluateOptions) -> int:
    from hvd_trainer.data.pipeline import load_inference_data
    from hvd_trainer.predictor import Predictor

    trained = load_trained_model(options.model_path)
    strategy, model = trained.strategy, trained.model
    dataset = load_inference_data(trained.job.model, trained.metadata, options.dataset, strategy, shard=True,
                                  split=options.split)
    metrics = Predictor(model, model, options.batch_size, strategy, "cpu").batch_evaluation(dataset)
    # --output-directory takes the file that would otherwise go into the run directory.
    out = RunLayout(options.output_directory) if options.output_directory else trained.layout
    run_on_coordinator(strategy, "hvd_trainer.evaluation_written", lambda: _write_metrics(out, metrics))
    if strategy.is_coordinator():
        print(format_metrics_table({options.split or WHOLE_DATASET_LABEL: metrics}), flush=True)
        print(f"Metrics written to {out.evaluation_statistics}", flush=True)
    return 0


def _write_metrics(out: RunLayout, metrics) -> None:
    with writing_into(out.root):
        os.makedirs(out.root, exist_ok=True)
        write_json(out.evaluation_statistics, metrics)
