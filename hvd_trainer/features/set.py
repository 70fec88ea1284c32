"""The set feature: a value holding several items ("action, comedy"), split by a tokenizer; a
multi-hot row over the vocabulary of items. As an input, the `embed` encoder sums the embeddings
of the items present (then an optional fully connected stack); as an output, one sigmoid per item
(sigmoid cross entropy), an item predicted when its probability reaches `threshold`, reported
with Ludwig's jaccard metric.

Metadata (Ludwig's names): idx2str, str2idx, str2freq, vocab_size, max_set_size and the computed
fill value. The vocabulary is <UNK> then the `most_common` most frequent items of the training
set over all ranks (hvd_trainer.features.tokens); an item never seen in training sets <UNK>.
Differences from Ludwig: <UNK> is index 0 (Ludwig inserts it at index 3), and the jaccard of an
empty prediction for an empty target is 1 (Ludwig's is NaN).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hvd_trainer.features.arrays import as_strings, no_values_error, ranked
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import FeatureConfig, OutputFeatureConfig, config_field
from hvd_trainer.features.layers import FCLayerSpec, FCStack, ACTIVATIONS, NORMS
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.features.tokens import LUDWIG_OTHER_TOKENIZERS, TOKENIZERS, filled, global_token_stats, tokenize, \
    vocabulary
from hvd_trainer.metrics import MeanLoss, RatioMetric

UNK = "<UNK>"
MISSING_VALUE_STRATEGIES = ("fill_with_const", "fill_with_mode", "drop_row")


# ---- config ----------------------------------------------------------------------------------
@dataclass
class SetPreprocessing:
    tokenizer: str = config_field("space", "How a value splits into items.", choices=tuple(TOKENIZERS))
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: str = config_field(UNK, "The value used by fill_with_const.")
    lowercase: bool = config_field(False, "Lowercase values before splitting them.")
    most_common: int = config_field(10000, "Keep this many most frequent items; the rest map to <UNK>.", min=1)


@dataclass
class SetOutputPreprocessing(SetPreprocessing):
    missing_value_strategy: str = config_field("drop_row", "What to do with a missing target.",
                                               choices=MISSING_VALUE_STRATEGIES)


@dataclass
class SetEncoderConfig:
    type: str = config_field("embed", "embed: the sum of the items' embeddings.", choices=("embed",))
    representation: str = config_field("dense", "dense (trainable embeddings) or sparse (the multi-hot row).",
                                       choices=("dense", "sparse"))
    embedding_size: int = config_field(50, "Width of each item's embedding.", min=1)
    embeddings_trainable: bool = config_field(True, "Train the embeddings.")
    dropout: float = config_field(0.0, "Dropout on the embedding and after each fully connected layer.",
                                  min=0, max=0.999)
    fc_layers: Optional[List[FCLayerSpec]] = config_field(None, "Fully connected layers after the embedding.")
    num_fc_layers: int = config_field(0, "Number of fully connected layers (when fc_layers is not set).", min=0)
    output_size: int = config_field(10, "Width of each fully connected layer.", min=1)
    activation: str = config_field("relu", "Activation of the fully connected layers.", choices=tuple(ACTIVATIONS))
    norm: Optional[str] = config_field(None, "batch or layer normalization in the layers.", choices=NORMS)
    use_bias: bool = config_field(True, "Give the fully connected layers a bias.")


@dataclass
class SetInputConfig(FeatureConfig):
    preprocessing: SetPreprocessing = field(default_factory=SetPreprocessing)
    encoder: SetEncoderConfig = field(default_factory=SetEncoderConfig)


@dataclass
class SetOutputConfig(OutputFeatureConfig):
    preprocessing: SetOutputPreprocessing = field(default_factory=SetOutputPreprocessing)
    threshold: float = config_field(0.5, "An item is predicted when its probability reaches this.", min=0, max=1)


# ---- metadata and transform ------------------------------------------------------------------
def _fill(f: FeatureConfig, counts) -> str:
    p = f.preprocessing
    if p.missing_value_strategy != "fill_with_mode":
        return p.fill_value
    value_counts, _ = counts
    if not value_counts:
        raise no_values_error(f, "fill_with_mode")
    return ranked(value_counts)[0]


def set_metadata(features: List[FeatureConfig], columns: Mapping[str, np.ndarray], counts, reducer) -> Dict[str, Any]:
    fills = {f.name: _fill(f, counts.get(f.name)) for f in features}
    texts = {f.name: filled(columns[f.name], fills[f.name]) for f in features}
    stats = global_token_stats(features, texts, reducer, name="data.metadata.set_tokens")
    out = {}
    for f in features:
        token_counts, longest = stats[f.name]
        p = f.preprocessing
        idx2str = vocabulary(token_counts, p.most_common, [UNK])
        str2freq = {t: int(token_counts.get(t, 0)) for t in idx2str}
        out[f.name] = {
            "type": "set", "column": f.column_name,
            "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fills[f.name],
                              "tokenizer": p.tokenizer, "lowercase": p.lowercase, "most_common": p.most_common},
            "idx2str": idx2str, "str2idx": {t: i for i, t in enumerate(idx2str)}, "str2freq": str2freq,
            "vocab_size": len(idx2str), "max_set_size": int(longest),
        }
    return out


def multi_hot(values: np.ndarray, meta: Mapping[str, Any], name: str,
              unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """[rows, vocab_size] bool: which items each row holds (unseen items set <UNK>)."""
    p = meta["preprocessing"]
    str2idx = meta["str2idx"]
    out = np.zeros((len(values), int(meta["vocab_size"])), dtype=bool)
    unseen = 0
    for row, text in enumerate(filled(values, p["computed_fill_value"])):
        for token in tokenize(text, p["tokenizer"], p["lowercase"]):
            idx = str2idx.get(token)
            if idx is None:
                idx, unseen = 0, unseen + 1
            out[row, idx] = True
    if unknown_counts is not None and unseen:
        unknown_counts[name] = unknown_counts.get(name, 0) + unseen
    return out


# ---- model -----------------------------------------------------------------------------------
class SetEmbed(nn.Module):
    """[batch, vocab] multi-hot -> the sum of the present items' embeddings -> FC stack."""

    def __init__(self, vocab_size: int, config: SetEncoderConfig):
        super().__init__()
        if config.representation == "dense":
            self.embeddings = nn.Parameter(torch.empty(vocab_size, config.embedding_size))
            nn.init.xavier_uniform_(self.embeddings)
            self.embeddings.requires_grad_(config.embeddings_trainable)
            width = config.embedding_size
        else:
            self.register_buffer("embeddings", torch.eye(vocab_size))
            width = vocab_size
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fc_stack = FCStack(width, config.fc_layers, config.num_fc_layers, config.output_size,
                                config.activation, config.dropout, config.norm, config.use_bias)
        self.output_size = self.fc_stack.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_stack(self.dropout(x.float() @ self.embeddings))


class SetInput(InputFeature):
    def __init__(self, name: str, vocab_size: int, config: SetInputConfig):
        super().__init__(name)
        self.vocab_size = vocab_size
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.rand(batch_size, self.vocab_size) < 0.3

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.bool)

    def build_encoder(self) -> nn.Module:
        return SetEmbed(self.vocab_size, self.config.encoder)


class Jaccard(RatioMetric):
    """Mean over rows of |predicted items & true items| / |predicted items | true items|."""

    name = "jaccard"

    def update(self, preds, target):
        preds, target = preds.bool(), target.bool()
        inter = (preds & target).sum(-1).double()
        union = (preds | target).sum(-1).double()
        per_row = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        self._add(per_row.sum(), torch.tensor(target.shape[0]))


class SetOutput(OutputFeature):
    type = "set"
    metric_types = (MeanLoss, Jaccard)

    def __init__(self, name: str, vocab_size: int, loss_weight: float = 1.0, threshold: float = 0.5):
        super().__init__(name, loss_weight)
        self.vocab_size = vocab_size
        self.threshold = threshold

    @property
    def output_size(self) -> int:
        return self.vocab_size

    def loss(self, logits, target):
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none").mean(-1)

    def predictions(self, logits):
        probs = torch.sigmoid(logits.float())
        return {"predictions": probs >= self.threshold, "probabilities": probs}

    def update_metrics(self, metrics, logits, target):
        metrics["jaccard"].update(torch.sigmoid(logits.float()) >= self.threshold, target)

    def create_sample_output(self, batch_size):
        return (torch.rand(batch_size, self.vocab_size) < 0.3).float()

    def target_tensor(self, column):
        return column_tensor(column, torch.float32)


# ---- the type ----------------------------------------------------------------------------------
class SetType(FeatureType):
    name = "set"
    input_config = SetInputConfig
    output_config = SetOutputConfig
    output_class = SetOutput
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "sigmoid_cross_entropy"
    default_decoder = "classifier"
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY},
        "encoder": {"vocab": ANY, "embeddings_on_cpu": ANY, "pretrained_embeddings": (None,), "skip": (False,),
                    "weights_initializer": ANY, "bias_initializer": ANY, "norm_params": (None,)},
    }
    ludwig_only_values = {"preprocessing.tokenizer": (LUDWIG_OTHER_TOKENIZERS, tuple(TOKENIZERS))}
    metadata_checked_keys = ("tokenizer", "lowercase", "most_common")

    def cast(self, array, feature, row_ids, path):
        return as_strings(array, feature, path).to_numpy(zero_copy_only=False)

    def needs_value_counts(self, feature):
        return feature.preprocessing.missing_value_strategy == "fill_with_mode"

    def metadata(self, features, columns, counts, reducer):
        return set_metadata(features, columns, counts, reducer)

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return multi_hot(values, meta, name, unknown_counts)

    def decode(self, meta, predictions):
        idx2str = meta["idx2str"]
        rows = np.asarray(predictions).astype(bool)
        out = np.empty(len(rows), dtype=object)
        for i, row in enumerate(rows):
            out[i] = [idx2str[j] for j in np.flatnonzero(row)]
        return out

    def input_feature(self, config, metadata):
        return SetInput(config.name, int(metadata[config.name]["vocab_size"]), config)

    def output_feature(self, config, metadata):
        return SetOutput(config.name, int(metadata[config.name]["vocab_size"]), loss_weight=config.loss.weight,
                         threshold=config.threshold)


SET = SetType()
