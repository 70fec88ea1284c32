"""Kept so that `from hvd_trainer.models.columns import column_tensor` (tests/test_trainer.py)
still works; column_tensor lives in hvd_trainer.features.columns."""
from hvd_trainer.features.columns import column_tensor

__all__ = ["column_tensor"]
