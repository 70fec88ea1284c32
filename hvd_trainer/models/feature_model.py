"""FeatureModel: the config-driven model (Ludwig's ECD) of the feature types in hvd_trainer.features.

    encoders (one per input) -> combiner (concat or tabnet) -> decoders (per output: optional fc layers, then one
    Linear)

Encoders, losses, predictions and metrics come from each feature's type in hvd_trainer.features.
Build it with `build_model(model_config, metadata)`; the metadata (vocabulary sizes) comes from
load_training_data, or from load_metadata when evaluating, predicting or resuming.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np

import torch
from torch import nn

from hvd_trainer.features import check_metadata_matches, feature_type
from hvd_trainer.features.model_parts import InputFeature, OutputFeature, ScalarInput
from hvd_trainer.features.config import FCLayerConfig
from hvd_trainer.model_config import CombinerConfig, ModelConfig
from hvd_trainer.models.base import AUXILIARY_LOSS, BaseModel, to_device
from hvd_trainer.models.combiner import build_combiner, fc_stack


#: Key of the [batch, k] block that carries all number and binary inputs at once.
DENSE_BLOCK = "__dense_inputs__"


class FeatureModel(BaseModel):
    def __init__(self, inputs: Sequence[InputFeature], outputs: Sequence[OutputFeature], combiner: CombinerConfig,
                 decoder_layers: Optional[Mapping[str, Sequence[FCLayerConfig]]] = None):
        super().__init__()
        self.input_features = {f.name: f for f in inputs}
        self.output_features = {f.name: f for f in outputs}
        # Number and binary inputs are their own encodings (one value each). They travel as one
        # [batch, k] block: with 64 pixel columns, a tensor and a module call per column cost
        # more than the MLP itself (about 1 ms per step of 128 rows).
        self._dense_names = [f.name for f in inputs if isinstance(f, ScalarInput)]
        others = [(i, f) for i, f in enumerate(inputs) if not isinstance(f, ScalarInput)]
        # Module keys are not the names: a name may hold '.' or clash with ModuleDict's methods.
        self._input_keys = {f.name: module_key(i, f.name) for i, f in others}
        self._output_keys = {f.name: module_key(i, f.name) for i, f in enumerate(outputs)}
        self.encoders = nn.ModuleDict({self._input_keys[f.name]: f.build_encoder() for _, f in others})
        sizes = ([len(self._dense_names)] if self._dense_names else []) + [e.output_size for e in self.encoders.values()]
        self.combiner = build_combiner(sizes, combiner)
        # A combiner with a loss of its own (tabnet's sparsity) returns (hidden, loss).
        self._combiner_loss = getattr(self.combiner, "returns_loss", False)
        # Ludwig's output fc_stack: layers of the output's own between the combiner and its projection.
        # Kept apart from `decoders` so that a model without them keeps its parameter names.
        self.decoder_fc = nn.ModuleDict()
        widths = {}
        for f in outputs:
            stack, width = fc_stack(self.combiner.output_size, (decoder_layers or {}).get(f.name, ()))
            if len(stack):
                self.decoder_fc[self._output_keys[f.name]] = stack
            widths[f.name] = width
        self.decoders = nn.ModuleDict(
            {self._output_keys[f.name]: nn.Linear(widths[f.name], f.output_size) for f in outputs}
        )

    def prepare_dataset(self, dataset):
        # The number/binary columns stacked once, so that a batch is one take instead of one per column.
        if self._dense_names and all(n in dataset.columns for n in self._dense_names):
            return dataset.stacked(DENSE_BLOCK, self._dense_names, np.float32)
        return dataset

    def input_tensors(self, batch: Mapping[str, np.ndarray], device) -> Dict[str, torch.Tensor]:
        tensors = {}
        if self._dense_names:
            block = batch.get(DENSE_BLOCK)
            if block is None:  # a dataset that was not prepared: stack this batch's columns
                block = np.stack([batch[n] for n in self._dense_names], axis=1).astype(np.float32, copy=False)
            tensors[DENSE_BLOCK] = torch.from_numpy(block)
        for name in self._input_keys:
            tensors[name] = self.input_features[name].input_tensor(batch[name])
        return to_device(tensors, device)

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        encodings = []
        if self._dense_names:
            dense = inputs.get(DENSE_BLOCK)
            if dense is None:  # inputs given by feature name (sample batches, direct calls)
                dense = torch.stack([inputs[n].float().reshape(-1) for n in self._dense_names], dim=1)
            encodings.append(dense)
        encodings += [self.encoders[key](inputs[name]) for name, key in self._input_keys.items()]
        hidden = self.combiner(encodings)
        logits = {}
        if self._combiner_loss:
            hidden, loss = hidden
            if loss is not None:  # None in evaluation, or with a loss weight of 0
                logits[AUXILIARY_LOSS] = loss
        for name, key in self._output_keys.items():
            out = self.decoders[key](self.decoder_fc[key](hidden) if key in self.decoder_fc else hidden)
            # number and binary outputs are one value per sample: [batch], as their targets.
            logits[name] = out.squeeze(-1) if self.output_features[name].output_size == 1 else out
        return logits


def module_key(index: int, name: str) -> str:
    """A key for nn.ModuleDict: feature names may hold '.' or clash with ModuleDict's methods."""
    return f"{index}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


def build_model(model_config: ModelConfig, metadata: Mapping[str, Any]) -> FeatureModel:
    """The FeatureModel for a config and its training set metadata (seed torch first for reproducibility)."""
    check_metadata_matches(model_config.features, metadata)
    inputs = [feature_type(f.type).input_feature(f, metadata) for f in model_config.input_features]
    outputs = [feature_type(f.type).output_feature(f, metadata) for f in model_config.output_features]
    layers = {f.name: f.decoder.layer_specs() for f in model_config.output_features}
    return FeatureModel(inputs, outputs, model_config.combiner, layers)
