"""Kept so that `from hvd_trainer.models.config import ModelConfig` (commands.py, benchmarks) still
works; the model config lives in hvd_trainer.model_config, where hvd_trainer.data can read it too."""
from hvd_trainer.model_config import ModelConfig

__all__ = ["ModelConfig"]
