"""Evaluation and prediction over a dataset sharded across ranks.

Each rank runs its own shard (no padding, so no sample counts twice); metrics are combined
over all ranks by the model's get_metrics(distributed). Predictions are gathered to rank 0.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch

from hvd_trainer.data.dataset import Dataset
from hvd_trainer.models.base import BaseModel


class Predictor:
    def __init__(self, dist_model: torch.nn.Module, model: BaseModel, batch_size: int, distributed, device):
        self.dist_model = dist_model
        self.model = model
        self.batch_size = int(batch_size)
        self.distributed = distributed
        self.device = device

    def _batches(self, dataset: Dataset):
        dataset = self.model.prepare_dataset(dataset)
        batcher = dataset.initialize_batcher(self.batch_size, should_shuffle=False, distributed=self.distributed, training=False)
        while not batcher.last_batch():
            yield batcher.next_batch()

    @torch.no_grad()
    def batch_evaluation(self, dataset: Dataset) -> Dict[str, Dict[str, float]]:
        """{feature: {metric: value}} over every rank's shard of `dataset`."""
        was_training = self.dist_model.training
        self.dist_model.eval()
        self.model.reset_metrics()
        try:
            for batch in self._batches(dataset):
                inputs = self.model.input_tensors(batch, self.device)
                targets = self.model.target_tensors(batch, self.device)
                self.model.update_metrics(targets, self.dist_model(inputs))
            return self.model.get_metrics(self.distributed)
        finally:
            self.model.reset_metrics()
            self.dist_model.train(was_training)

    @torch.no_grad()
    def batch_predict(self, dataset: Dataset, row_id_column: Optional[str] = None) -> Optional[Dict[str, np.ndarray]]:
        """Predictions of every output feature for all rows, gathered on rank 0 (None elsewhere).

        Columns: "<feature>_predictions" and, where the feature has them,
        "<feature>_probabilities" (one column per class as a 2-D array). When row_id_column
        is given, rows are returned sorted by it (the input's order).
        """
        was_training = self.dist_model.training
        self.dist_model.eval()
        parts: Dict[str, list] = {}
        try:
            for batch in self._batches(dataset):
                logits = self.dist_model(self.model.input_tensors(batch, self.device))
                for name, feature in self.model.output_features.items():
                    for key, value in feature.predictions(logits[name]).items():
                        parts.setdefault(f"{name}_{key}", []).append(value.cpu())
                if row_id_column:
                    parts.setdefault(row_id_column, []).append(torch.as_tensor(batch[row_id_column]))
        finally:
            self.dist_model.train(was_training)
        local = {k: torch.cat(v) for k, v in parts.items()}
        gathered = self.distributed.allgather_object({k: v.numpy() for k, v in local.items()},
                                                     name="hvd_trainer.predictions")
        if not self.distributed.is_coordinator():
            return None
        keys = sorted(set().union(*gathered))  # a rank with no rows sends no columns
        columns = {k: np.concatenate([g[k] for g in gathered if k in g]) for k in keys}
        if row_id_column and columns:
            order = np.argsort(columns[row_id_column], kind="stable")
            columns = {k: v[order] for k, v in columns.items()}
        return columns
