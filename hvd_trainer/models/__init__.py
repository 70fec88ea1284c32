"""Models that hvd_trainer trains: the contract (BaseModel), an adapter for your own module,
and the config-driven feature model. Input and output features come from hvd_trainer.features."""
from hvd_trainer.features.binary import BinaryOutput
from hvd_trainer.features.category import CategoryOutput
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.features.number import NumberOutput
from hvd_trainer.models.adapter import ModuleAdapter, TensorInput
from hvd_trainer.models.base import BaseModel

__all__ = ["BaseModel", "InputFeature", "ModuleAdapter", "TensorInput", "OutputFeature", "CategoryOutput", "BinaryOutput", "NumberOutput"]
