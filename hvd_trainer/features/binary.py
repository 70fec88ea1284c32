"""The binary feature: yes/no, true/false, 1/0 (or two labels, one named as true) read as 0/1;
its own encoding as an input, a logistic regression (binary cross entropy) as an output.

Metadata (Ludwig's names): str2bool, bool2str, fallback_true_label and the computed fill value.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from hvd_trainer.errors import DataError
from hvd_trainer.features.arrays import as_strings, describe_feature, lookup, missing_mask, ranked
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import (FeatureConfig, LossConfig, OutputFeatureConfig, PassthroughEncoderConfig,
                                         config_field)
from hvd_trainer.features.model_parts import OutputFeature, ScalarInput, confidence_penalty
from hvd_trainer.metrics import Accuracy, MeanLoss, RocAuc

logger = logging.getLogger(__name__)

MISSING_VALUE_STRATEGIES = ("fill_with_false", "fill_with_true", "fill_with_const", "fill_with_mode", "drop_row")
BOOL_TRUE_STRS = frozenset({"yes", "y", "true", "t", "1", "1.0"})
BOOL_FALSE_STRS = frozenset({"no", "n", "false", "f", "0", "0.0"})


# ---- config ----------------------------------------------------------------------------------
@dataclass
class BinaryPreprocessing:
    missing_value_strategy: str = config_field("fill_with_false", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: Union[None, bool, float, str] = config_field(
        None, "The value used by fill_with_const (true/false, 1/0, yes/no).")
    fallback_true_label: Optional[str] = config_field(
        None, "The value read as true when the column is not yes/no, true/false or 1/0.")

    def __post_init__(self):
        if self.missing_value_strategy == "fill_with_const" and self.fill_value is None:
            raise ValueError(
                "missing_value_strategy is fill_with_const but fill_value is not set; set fill_value "
                "(e.g. false) or use fill_with_false."
            )


@dataclass
class BinaryOutputPreprocessing(BinaryPreprocessing):
    missing_value_strategy: str = config_field("drop_row", "What to do with a missing target.",
                                               choices=MISSING_VALUE_STRATEGIES)


@dataclass
class BinaryInputConfig(FeatureConfig):
    preprocessing: BinaryPreprocessing = field(default_factory=BinaryPreprocessing)
    encoder: PassthroughEncoderConfig = field(default_factory=PassthroughEncoderConfig)


@dataclass
class BinaryLossConfig(LossConfig):
    """Ludwig's binary_weighted_cross_entropy."""

    positive_class_weight: Optional[float] = config_field(
        None, "Weight of the positive class in the cross entropy (null or 0: unweighted).", min=0)
    robust_lambda: float = config_field(
        0, "Mix the loss with a uniform guess: (1 - robust_lambda) * loss + robust_lambda / 2.", min=0, max=1)
    confidence_penalty: float = config_field(
        0, "Weight of Ludwig's penalty on confident (low-entropy) probabilities.", min=0)


@dataclass
class BinaryOutputConfig(OutputFeatureConfig):
    preprocessing: BinaryOutputPreprocessing = field(default_factory=BinaryOutputPreprocessing)
    loss: BinaryLossConfig = field(default_factory=BinaryLossConfig)
    threshold: float = config_field(0.5, "Probability above which the prediction is true.", gt=0, max=0.999999)


# ---- casting ---------------------------------------------------------------------------------
def cast_binary(array: pa.Array, feature: FeatureConfig, path: str) -> np.ndarray:
    """Strings with None where missing; numbers become "1", "0" or their repr."""
    t = array.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        floats = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        out = np.empty(len(floats), dtype=object)
        for i, v in enumerate(floats):
            out[i] = None if np.isnan(v) else ("1" if v == 1 else "0" if v == 0 else repr(float(v)))
        return out
    return as_strings(array, feature, path).to_numpy(zero_copy_only=False)


def conventional_bool(value: str) -> Optional[bool]:
    """True or False for yes/no, true/false, 1/0 (any case); None for anything else."""
    low = value.lower()
    return True if low in BOOL_TRUE_STRS else False if low in BOOL_FALSE_STRS else None


def to_bool(value: str, fallback: Optional[str]) -> Optional[bool]:
    """The value's truth: conventional, else whether it is the fallback true label (None if unset)."""
    conventional = conventional_bool(value)
    if conventional is not None:
        return conventional
    return None if fallback is None else value == fallback


# ---- metadata --------------------------------------------------------------------------------
def binary_metadata(f: FeatureConfig, counts: Counter, missing: int) -> Dict[str, Any]:
    """str2bool and bool2str of one binary feature, from its value counts over the training set."""
    p = f.preprocessing
    fallback = _true_label(f, counts)
    str2bool = {v: to_bool(v, fallback) for v in counts}
    fill = _binary_fill(f, counts, str2bool, fallback)
    by_side: Dict[bool, List[str]] = {False: [], True: []}
    for v in ranked(counts):
        by_side[str2bool[v]].append(v)
    bool2str = [by_side[False][0] if by_side[False] else "false", by_side[True][0] if by_side[True] else "true"]
    return {
        "type": "binary", "column": f.column_name,
        "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fill,
                          "fallback_true_label": fallback},
        "str2bool": str2bool, "bool2str": bool2str, "fallback_true_label": fallback,
    }


def _true_label(f: FeatureConfig, counts: Counter) -> Optional[str]:
    """The configured fallback_true_label, or the last unconventional value (two labels at most)."""
    fallback = f.preprocessing.fallback_true_label
    unconventional = sorted(v for v in counts if conventional_bool(v) is None)
    if unconventional and fallback is None:
        if len(counts) > 2:
            shown = ", ".join(repr(v) for v in ranked(counts)[:6])
            raise DataError(
                f"The {describe_feature(f)} holds {len(counts)} different values ({shown}), but a binary "
                "column needs two: yes/no, true/false, 1/0, or two labels with preprocessing.fallback_true_label "
                "naming the one that means true. Fix the values, set fallback_true_label, or use type category."
            )
        fallback = unconventional[-1]
        logger.info("Binary feature %r: %r is read as true (set preprocessing.fallback_true_label to choose).",
                    f.name, fallback)
    return fallback


def _binary_fill(f: FeatureConfig, counts: Counter, str2bool: Mapping[str, bool], fallback: Optional[str]) -> bool:
    strategy = f.preprocessing.missing_value_strategy
    if strategy in ("fill_with_false", "drop_row"):
        return False
    if strategy == "fill_with_true":
        return True
    if strategy == "fill_with_mode":
        trues = sum(c for v, c in counts.items() if str2bool[v])
        return trues > sum(counts.values()) - trues
    value = f.preprocessing.fill_value
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value in (0.0, 1.0):
        return value == 1.0
    mapped = to_bool(str(value), fallback)
    if mapped is None:
        raise DataError(
            f"The binary feature {f.name!r} has fill_value {value!r}, which is neither true nor false. Use true, "
            "false, 1, 0, yes or no."
        )
    return mapped


# ---- transform -------------------------------------------------------------------------------
def binary_values(values: np.ndarray, meta: Mapping[str, Any], name: str, row_ids: np.ndarray, path: str) -> np.ndarray:
    """float32 0/1 per value; a value training never saw must still read as true or false."""
    str2bool, fallback = meta["str2bool"], meta["fallback_true_label"]
    keys = list(str2bool)
    table = np.array([1.0 if str2bool[k] else 0.0 for k in keys] + [np.nan], dtype=np.float64)
    out = table[lookup(values, keys)]  # -1 picks the trailing NaN
    out[missing_mask(values)] = 1.0 if meta["preprocessing"]["computed_fill_value"] else 0.0
    for i in np.flatnonzero(np.isnan(out)):  # values training never saw
        b = to_bool(values[i], fallback)
        if b is None:
            raise DataError(
                f"The binary feature {name!r} holds {values[i]!r} in row {int(row_ids[i])} of {path} (counting data "
                f"rows from 0), which is neither true nor false, and training saw only {sorted(str2bool)}. Fix the "
                "value or leave the cell empty to mark it missing."
            )
        out[i] = 1.0 if b else 0.0
    return out.astype(np.float32)


# ---- model -----------------------------------------------------------------------------------
class BinaryInput(ScalarInput):
    """A float32 column of 0/1."""

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, 2, (batch_size,)).float()


class BinaryOutput(OutputFeature):
    type = "binary"
    metric_types = (MeanLoss, Accuracy, RocAuc)

    def __init__(self, name: str, loss_weight: float = 1.0, threshold: float = 0.5,
                 loss_config: Optional[BinaryLossConfig] = None):
        super().__init__(name, loss_weight)
        self.threshold = threshold
        self.loss_config = loss_config if loss_config is not None else BinaryLossConfig()
        weight = self.loss_config.positive_class_weight
        self._pos_weight = torch.tensor([float(weight)]) if weight else None

    @property
    def output_size(self) -> int:
        return 1

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target.float().reshape(-1), reduction="none")

    def mean_loss(self, logits, target):
        # Ludwig's BWCEWLoss, term by term: weighted cross entropy, robust mix, confidence penalty.
        logits = logits.float().reshape(-1)
        pos_weight = self._pos_weight.to(logits.device) if self._pos_weight is not None else None
        loss = F.binary_cross_entropy_with_logits(logits, target.float().reshape(-1), pos_weight=pos_weight)
        robust, penalty = self.loss_config.robust_lambda, self.loss_config.confidence_penalty
        if robust > 0:
            loss = (1 - robust) * loss + robust / 2
        if penalty > 0:
            loss = loss + penalty * confidence_penalty(torch.sigmoid(logits), 2)
        return loss

    def predictions(self, logits):
        probs = torch.sigmoid(logits.float().reshape(-1))
        return {"predictions": probs >= self.threshold, "probabilities": probs}

    def update_metrics(self, metrics, logits, target):
        probs = torch.sigmoid(logits.float().reshape(-1))
        target = target.reshape(-1)
        metrics["accuracy"].update((probs >= self.threshold).to(target.dtype), target)
        metrics["roc_auc"].update(probs, target)

    def create_sample_output(self, batch_size):
        return torch.randint(0, 2, (batch_size,)).float()

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


# ---- the type ----------------------------------------------------------------------------------
class BinaryType(FeatureType):
    name = "binary"
    input_config = BinaryInputConfig
    output_config = BinaryOutputConfig
    output_class = BinaryOutput
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "binary_weighted_cross_entropy"
    default_decoder = "regressor"
    ludwig_noop_keys = {"preprocessing": {"computed_fill_value": ANY}, "encoder": {"skip": (False,)}}
    ludwig_only_values = {"encoder.type": (("dense",), ("passthrough",))}
    dense_input = True

    def cast(self, array, feature, row_ids, path):
        return cast_binary(array, feature, path)

    def metadata(self, features, columns, counts, reducer):
        return {f.name: binary_metadata(f, *counts[f.name]) for f in features}

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return binary_values(values, meta, name, row_ids, path)

    def decode(self, meta, predictions):
        bool2str = meta["bool2str"]
        return np.array([bool2str[1] if p else bool2str[0] for p in np.asarray(predictions)], dtype=object)

    def input_feature(self, config, metadata):
        return BinaryInput(config.name)

    def output_feature(self, config, metadata):
        return BinaryOutput(config.name, loss_weight=config.loss.weight, threshold=config.threshold,
                            loss_config=config.loss)


BINARY = BinaryType()
