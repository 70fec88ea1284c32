"""Data: the in-memory dataset and its sharded batcher, readers and preprocessing."""
from hvd_trainer.data.dataset import Batcher, Dataset

__all__ = ["Batcher", "Dataset"]
