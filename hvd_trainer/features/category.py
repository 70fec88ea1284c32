"""The category feature: strings mapped to vocabulary indices (index 0 is <UNK>); embedded or
one-hot encoded as an input, classified (softmax cross entropy) as an output.

Metadata (Ludwig's names): idx2str, str2idx, str2freq, vocab_size and the computed fill value.
The vocabulary holds the `most_common` most frequent training values, ties broken by value so
that every rank and run agrees; a value never seen in training maps to <UNK>.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import logging
from typing import Any, Dict, List, Mapping, Optional, Union

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from hvd_trainer.features.arrays import as_strings, lookup, missing_mask, no_values_error, ranked
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.errors import ConfigError
from hvd_trainer.features.config import FeatureConfig, LossConfig, OutputFeatureConfig, config_field
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.metrics import Accuracy, HitsAtK, MeanLoss

logger = logging.getLogger(__name__)

UNK = "<UNK>"
MISSING_VALUE_STRATEGIES = ("fill_with_const", "fill_with_mode", "drop_row")
ENCODERS = ("dense", "sparse", "onehot")


# ---- config ----------------------------------------------------------------------------------
@dataclass
class CategoryPreprocessing:
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: Union[str, int, float] = config_field(UNK, "The category used by fill_with_const.")
    most_common: Optional[int] = config_field(10000, "Keep this many most frequent values; the rest map to <UNK>.",
                                              min=1)
    lowercase: bool = config_field(False, "Lowercase values before building the vocabulary.")

    def __post_init__(self):
        # A category read from a file is a string, so a numeric fill value must become one too.
        self.fill_value = str(self.fill_value)


@dataclass
class CategoryOutputPreprocessing(CategoryPreprocessing):
    missing_value_strategy: str = config_field("drop_row", "What to do with a missing target.",
                                               choices=MISSING_VALUE_STRATEGIES)


@dataclass
class CategoryEncoderConfig:
    type: str = config_field("dense", "dense (trainable embedding), sparse or onehot (one-hot vector).",
                             choices=ENCODERS)
    embedding_size: int = config_field(50, "Width of the dense embedding.", min=1)
    embeddings_trainable: bool = config_field(True, "Train the dense embedding (false: keep its random init).")
    dropout: float = config_field(0.0, "Dropout on the encoding.", min=0, max=0.999)


@dataclass
class CategoryInputConfig(FeatureConfig):
    preprocessing: CategoryPreprocessing = field(default_factory=CategoryPreprocessing)
    encoder: CategoryEncoderConfig = field(default_factory=CategoryEncoderConfig)


@dataclass
class CategoryLossConfig(LossConfig):
    """Ludwig's softmax_cross_entropy: class weights apply; the other keys are accepted and, as in Ludwig, unused."""

    class_weights: Union[None, List[float], Dict[str, float]] = config_field(
        None, "Weight per class: a list in vocabulary order (<UNK> first) or {class: weight}.")
    robust_lambda: float = config_field(0, "Accepted; Ludwig's softmax_cross_entropy does not use it.", min=0)
    confidence_penalty: float = config_field(0, "Accepted; Ludwig's softmax_cross_entropy does not use it.", min=0)
    class_similarities: Optional[List[List[float]]] = config_field(
        None, "Accepted; Ludwig's softmax_cross_entropy does not use it.")
    class_similarities_temperature: float = config_field(
        0, "Accepted; Ludwig's softmax_cross_entropy does not use it.", min=0)

    def __post_init__(self):
        unused = [k for k in ("robust_lambda", "confidence_penalty", "class_similarities_temperature")
                  if getattr(self, k)] + (["class_similarities"] if self.class_similarities else [])
        if unused:
            logger.warning(
                "loss.%s of a category output is accepted but changes nothing: Ludwig's softmax_cross_entropy loss "
                "does not use it, and hvd_trainer follows Ludwig. To weigh classes, set loss.class_weights.",
                " and loss.".join(unused))


@dataclass
class CategoryOutputConfig(OutputFeatureConfig):
    preprocessing: CategoryOutputPreprocessing = field(default_factory=CategoryOutputPreprocessing)
    loss: CategoryLossConfig = field(default_factory=CategoryLossConfig)
    top_k: int = config_field(3, "k of the hits_at_k metric.", min=1)


# ---- metadata and transform ------------------------------------------------------------------
def category_metadata(f: FeatureConfig, counts: Counter, missing: int) -> Dict[str, Any]:
    """The vocabulary of one category feature, from its value counts over the training set."""
    p = f.preprocessing
    if p.missing_value_strategy == "fill_with_mode":
        if not counts:
            raise no_values_error(f, "fill_with_mode")
        fill = ranked(counts)[0]
    else:
        fill = p.fill_value.lower() if p.lowercase else p.fill_value
    counts = Counter(counts)
    if missing and p.missing_value_strategy != "drop_row":
        counts[fill] += missing
    kept = [v for v in ranked(counts) if v != UNK]
    kept = kept[: p.most_common] if p.most_common else kept
    idx2str = [UNK] + kept
    str2freq = {v: int(counts.get(v, 0)) for v in idx2str}
    str2freq[UNK] = int(sum(counts.values()) - sum(str2freq[v] for v in kept))
    return {
        "type": "category", "column": f.column_name,
        "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fill,
                          "lowercase": p.lowercase, "most_common": p.most_common},
        "idx2str": idx2str, "str2idx": {v: i for i, v in enumerate(idx2str)}, "str2freq": str2freq,
        "vocab_size": len(idx2str),
    }


def category_indices(values: np.ndarray, meta: Mapping[str, Any], name: str,
                     unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """Vocabulary index of each value: missing values as their fill, unseen values as <UNK> (counted)."""
    missing = missing_mask(values)
    idx = lookup(values, meta["idx2str"])
    unseen = (idx < 0) & ~missing
    idx[missing] = meta["str2idx"].get(meta["preprocessing"]["computed_fill_value"], 0)
    idx[unseen] = 0  # never seen in training: <UNK>
    if unknown_counts is not None and unseen.any():
        unknown_counts[name] = unknown_counts.get(name, 0) + int(unseen.sum())
    return idx


# ---- model -----------------------------------------------------------------------------------
class DenseEmbedding(nn.Module):
    """A trainable embedding per category (index 0 is <UNK>)."""

    def __init__(self, vocab_size: int, embedding_size: int, trainable: bool = True, dropout: float = 0.0):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, embedding_size)
        self.embeddings.weight.requires_grad_(trainable)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_size = embedding_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embeddings(x.long()))


class OneHot(nn.Module):
    """A fixed one-hot vector per category; no parameters (Ludwig's sparse encoder is one too)."""

    def __init__(self, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.one_hot(x.long(), self.vocab_size).float())


class CategoryInput(InputFeature):
    """An int64 column of vocabulary indices."""

    def __init__(self, name: str, vocab_size: int, config: CategoryInputConfig):
        super().__init__(name)
        self.vocab_size = vocab_size
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch_size,))

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.int64)

    def build_encoder(self) -> nn.Module:
        enc = self.config.encoder
        if enc.type == "dense":
            return DenseEmbedding(self.vocab_size, enc.embedding_size, enc.embeddings_trainable, enc.dropout)
        return OneHot(self.vocab_size, enc.dropout)


class CategoryOutput(OutputFeature):
    type = "category"
    metric_types = (MeanLoss, Accuracy, HitsAtK)

    def __init__(self, name: str, num_classes: int, loss_weight: float = 1.0, top_k: int = 3,
                 class_weights: Optional[List[float]] = None):
        super().__init__(name, loss_weight)
        self.num_classes = num_classes
        self.top_k = top_k
        self._class_weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None

    @property
    def output_size(self) -> int:
        return self.num_classes

    def _weights(self, logits):
        return self._class_weights.to(logits.device) if self._class_weights is not None else None

    def loss(self, logits, target):
        return F.cross_entropy(logits.float(), target.long(), weight=self._weights(logits), reduction="none")

    def mean_loss(self, logits, target):
        # With class weights, torch's mean divides by the targets' summed weights (Ludwig's loss too).
        return F.cross_entropy(logits.float(), target.long(), weight=self._weights(logits))

    def predictions(self, logits):
        probs = torch.softmax(logits.float(), dim=-1)
        return {"predictions": probs.argmax(-1), "probabilities": probs}

    def new_metric(self, metric_type):
        return HitsAtK(self.top_k) if metric_type is HitsAtK else metric_type()

    def update_metrics(self, metrics, logits, target):
        target = target.long()
        metrics["accuracy"].update(logits.argmax(-1), target)
        metrics["hits_at_k"].update(logits, target)

    def create_sample_output(self, batch_size):
        return torch.randint(0, self.num_classes, (batch_size,))

    def target_tensor(self, column):
        return column_tensor(column, torch.int64)


# ---- the type ----------------------------------------------------------------------------------
class CategoryType(FeatureType):
    name = "category"
    input_config = CategoryInputConfig
    output_config = CategoryOutputConfig
    output_class = CategoryOutput
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "softmax_cross_entropy"
    default_decoder = "classifier"
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY, "cache_encoder_embeddings": (False,),
                          "most_common_percentile": ANY},
        "encoder": {"pretrained_embeddings": (None,), "embeddings_on_cpu": ANY, "embedding_initializer": (None,),
                    "vocab": ANY, "skip": (False,), "weights_initializer": (None,)},
    }
    ludwig_only_values = {"encoder.type": (("passthrough",), ENCODERS)}
    metadata_checked_keys = ("lowercase", "most_common")

    def cast(self, array, feature, row_ids, path):
        strings = as_strings(array, feature, path)
        if feature.preprocessing.lowercase:
            strings = pc.utf8_lower(strings)
        return strings.to_numpy(zero_copy_only=False)

    def metadata(self, features, columns, counts, reducer):
        return {f.name: category_metadata(f, *counts[f.name]) for f in features}

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return category_indices(values, meta, name, unknown_counts)

    def decode(self, meta, predictions):
        idx2str = meta["idx2str"]
        return np.array([idx2str[int(i)] for i in np.asarray(predictions)], dtype=object)

    def input_feature(self, config, metadata):
        return CategoryInput(config.name, int(metadata[config.name]["vocab_size"]), config)

    def output_feature(self, config, metadata):
        num_classes = int(metadata[config.name]["vocab_size"])
        weights = class_weight_list(config, metadata[config.name])
        return CategoryOutput(config.name, num_classes=num_classes, loss_weight=config.loss.weight,
                              top_k=min(config.top_k, num_classes), class_weights=weights)


def class_weight_list(config: CategoryOutputConfig, meta: Mapping[str, Any]) -> Optional[List[float]]:
    """loss.class_weights as one weight per vocabulary index, checked against the vocabulary (Ludwig's rule)."""
    weights = config.loss.class_weights
    if weights is None:
        return None
    idx2str = meta["idx2str"]
    where = f"output_features {config.name!r} loss.class_weights"
    if isinstance(weights, list):
        if len(weights) != len(idx2str):
            raise ConfigError(
                f"{where} has {len(weights)} weights, but the vocabulary has {len(idx2str)} classes "
                f"({', '.join(map(repr, idx2str[:8]))}{', ...' if len(idx2str) > 8 else ''}; <UNK> first). Give one "
                "weight per class in that order, or write {class: weight}."
            )
        return [float(w) for w in weights]
    unknown = sorted(set(weights) - set(idx2str))
    if unknown:
        raise ConfigError(
            f"{where} names {', '.join(map(repr, unknown))}, which the training set's vocabulary does not hold (it "
            f"holds {', '.join(map(repr, idx2str[:8]))}{', ...' if len(idx2str) > 8 else ''}). Fix the class names."
        )
    missing = [c for c in idx2str if c not in weights and c != UNK]
    if missing:
        raise ConfigError(
            f"{where} gives no weight to {', '.join(map(repr, missing[:8]))}; give every class a weight (<UNK> may be "
            "left out: it then weighs 1)."
        )
    return [float(weights.get(c, 1.0)) for c in idx2str]


CATEGORY = CategoryType()
