"""`predict`: predictions.csv of a trained model, one row per input row in input order."""
from __future__ import annotations

from hvd_trainer.commands.shared import writing_into
from hvd_trainer.commands.trained_model import load_trained_model
from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.options import PredictOptions


def run(options: PredictOptions) -> int:
    from hvd_trainer.data.pipeline import ROW_ID, load_inference_data
    from hvd_trainer.predictions import write_predictions_csv
    from hvd_trainer.predictor import Predictor

    trained = load_trained_model(options.model_path)
    strategy, model = trained.strategy, trained.model
    dataset = load_inference_data(trained.job.model, trained.metadata, options.dataset, strategy, shard=True,
                                  include_targets=False)
    columns = Predictor(model, model, options.batch_size, strategy, "cpu").batch_predict(dataset, row_id_column=ROW_ID)

    def write() -> str:
        with writing_into(options.output_directory):
            return write_predictions_csv(columns, model.output_features, trained.metadata, options.output_directory)

    path = run_on_coordinator(strategy, "hvd_trainer.predictions_written", write)
    if strategy.is_coordinator():
        print(f"Predictions for {len(columns[ROW_ID]) if columns else 0} rows written to {path}", flush=True)
    return 0
