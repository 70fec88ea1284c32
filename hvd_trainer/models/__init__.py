"""Models that hvd_trainer trains: the contract (BaseModel), an adapter for your own module,
and the config-driven feature model."""
from hvd_trainer.models.base import BaseModel, InputFeature, ModuleAdapter, TensorInput
from hvd_trainer.models.outputs import BinaryOutput, CategoryOutput, NumberOutput, OutputFeature

__all__ = ["BaseModel", "InputFeature", "ModuleAdapter", "TensorInput", "OutputFeature", "CategoryOutput", "BinaryOutput", "NumberOutput"]
