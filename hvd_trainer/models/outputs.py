"""Kept so that `from hvd_trainer.models.outputs import LOSS, higher_is_better` (trainer.py,
lr_scheduler.py) still works. Output features live in their type's module in hvd_trainer.features,
LOSS in hvd_trainer.metrics, and higher_is_better in hvd_trainer.features."""
from hvd_trainer.features import higher_is_better
from hvd_trainer.metrics import LOSS

__all__ = ["LOSS", "higher_is_better"]
