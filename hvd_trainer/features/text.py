"""The text feature (input only): a value split into tokens by a tokenizer, as a row of token ids
<SOS> tokens... <EOS>, padded with <PAD> to max_sequence_length; encoded by Ludwig's `embed`
(token embeddings reduced over the sequence), `parallel_cnn` (convolutions of widths 2..5 side by
side, reduced, then fully connected layers 512, 256) or `rnn` (an RNN/LSTM/GRU whose last output
is the encoding).

Metadata (Ludwig's names): idx2str, str2idx, str2freq, vocab_size, max_sequence_length, pad_idx,
padding_symbol, unknown_symbol and the computed fill value. The vocabulary is <EOS>, <SOS>,
<PAD>, <UNK> (Ludwig's order) then the `most_common` most frequent tokens of the training set over
all ranks (hvd_trainer.features.tokens); max_sequence_length is the longest training value in
tokens plus <SOS> and <EOS>, capped by preprocessing.max_sequence_length (or sequence_length when
set). A text output (Ludwig's generator decoder) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch
from torch import nn

from hvd_trainer.errors import ConfigError
from hvd_trainer.features.arrays import as_strings, no_values_error, ranked
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import FeatureConfig, OutputFeatureConfig, config_field
from hvd_trainer.features.layers import ACTIVATIONS, NORMS, FCLayerSpec, FCStack
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.features.tokens import LUDWIG_OTHER_TOKENIZERS, TOKENIZERS, filled, global_token_stats, token_ids, \
    tokenize, vocabulary

STOP, START = "<EOS>", "<SOS>"
MISSING_VALUE_STRATEGIES = ("fill_with_const", "fill_with_mode", "drop_row")
ENCODERS = ("parallel_cnn", "embed", "rnn")
REDUCERS = ("sum", "mean", "avg", "max", "last")
#: reduce_output when the config leaves it unset (Ludwig's per-encoder defaults).
DEFAULT_REDUCE = {"embed": "sum", "parallel_cnn": "sum", "rnn": "last"}
#: parallel_cnn's layers when neither conv_layers nor num_conv_layers is set.
DEFAULT_CONV_FILTER_SIZES = (2, 3, 4, 5)


# ---- config ----------------------------------------------------------------------------------
@dataclass
class TextPreprocessing:
    tokenizer: str = config_field("space_punct", "How a value splits into tokens.", choices=tuple(TOKENIZERS))
    max_sequence_length: Optional[int] = config_field(256, "Longest token row kept (with <SOS> and <EOS>).", min=1)
    sequence_length: Optional[int] = config_field(None, "A fixed row length (overrides max_sequence_length).", min=1)
    most_common: int = config_field(20000, "Keep this many most frequent tokens; the rest map to <UNK>.", min=1)
    padding_symbol: str = config_field("<PAD>", "The token that pads rows.")
    unknown_symbol: str = config_field("<UNK>", "The token of words not in the vocabulary.")
    padding: str = config_field("right", "Pad on the right or on the left.", choices=("right", "left"))
    lowercase: bool = config_field(False, "Lowercase values before tokenizing.")
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: str = config_field("<UNK>", "The value used by fill_with_const.")


@dataclass
class ConvLayerSpec:
    """One entry of parallel_cnn's conv_layers; unset keys take the encoder's values."""

    filter_size: Optional[int] = config_field(None, "Width of the convolution.", min=1)
    num_filters: Optional[int] = config_field(None, "Output channels.", min=1)
    pool_size: Optional[int] = config_field(None, "Pool this many positions after the convolution.", min=1)
    activation: Optional[str] = config_field(None, "Activation.", choices=tuple(ACTIVATIONS))


@dataclass
class TextEncoderConfig:
    type: str = config_field("parallel_cnn", "parallel_cnn, embed or rnn.", choices=ENCODERS)
    representation: str = config_field("dense", "dense (trainable embeddings) or sparse (one-hot).",
                                       choices=("dense", "sparse"))
    embedding_size: int = config_field(256, "Width of each token's embedding.", min=1)
    embeddings_trainable: bool = config_field(True, "Train the embeddings.")
    dropout: float = config_field(0.0, "Dropout on the embeddings and fully connected layers.", min=0, max=0.999)
    reduce_output: Optional[str] = config_field(None, "How the sequence becomes one vector (null: the encoder's "
                                                "default, sum; last for rnn).", choices=REDUCERS)
    # parallel_cnn
    conv_layers: Optional[List[ConvLayerSpec]] = config_field(None, "parallel_cnn's convolutions.")
    num_conv_layers: Optional[int] = config_field(None, "Number of convolutions (when conv_layers is not set).",
                                                  min=1)
    num_filters: int = config_field(256, "Output channels of each convolution.", min=1)
    filter_size: int = config_field(3, "Width of each convolution.", min=1)
    pool_function: str = config_field("max", "Pooling after a convolution.", choices=("max", "average", "avg", "mean"))
    pool_size: Optional[int] = config_field(None, "Pool this many positions after each convolution.", min=1)
    activation: str = config_field("relu", "Activation of convolutions and fully connected layers.",
                                   choices=tuple(ACTIVATIONS))
    # rnn
    cell_type: str = config_field("rnn", "rnn, lstm or gru.", choices=("rnn", "lstm", "gru"))
    num_layers: int = config_field(1, "Stacked recurrent layers.", min=1)
    state_size: int = config_field(256, "Width of the recurrent state.", min=1)
    bidirectional: bool = config_field(False, "Run the recurrence both ways.")
    fc_activation: Optional[str] = config_field(None, "rnn: activation of its fully connected layers.",
                                                choices=tuple(ACTIVATIONS))
    fc_dropout: Optional[float] = config_field(None, "rnn: dropout of its fully connected layers.", min=0, max=0.999)
    # fully connected layers after the reduction (parallel_cnn, rnn)
    fc_layers: Optional[List[FCLayerSpec]] = config_field(None, "Fully connected layers after the reduction.")
    num_fc_layers: Optional[int] = config_field(None, "Number of fully connected layers (parallel_cnn: 2 of 512, "
                                                "256 when neither this nor fc_layers is set; rnn: 0).", min=0)
    output_size: int = config_field(256, "Width of each fully connected layer.", min=1)
    norm: Optional[str] = config_field(None, "batch or layer normalization in the layers.", choices=NORMS)
    use_bias: bool = config_field(True, "Give the layers a bias.")

    def __post_init__(self):
        if self.type == "embed" and (self.fc_layers or self.num_fc_layers):
            raise ConfigError(
                "encoder.type embed has no fully connected layers (Ludwig's embed encoder has none): remove "
                "fc_layers/num_fc_layers, or use encoder type parallel_cnn or rnn."
            )
        if self.conv_layers is not None and self.num_conv_layers is not None:
            raise ConfigError("encoder has both conv_layers and num_conv_layers; set only one (as Ludwig requires).")


@dataclass
class TextInputConfig(FeatureConfig):
    preprocessing: TextPreprocessing = field(default_factory=TextPreprocessing)
    encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)


@dataclass
class TextOutputConfig(OutputFeatureConfig):
    def __post_init__(self):
        raise ConfigError(
            "type text is not supported as an output feature by hvd_trainer (Ludwig's text outputs are generated "
            "by a sequence decoder, which hvd_trainer does not implement). Use text as an input feature; for a "
            "label written as text, declare the output as type category."
        )


# ---- metadata and transform ------------------------------------------------------------------
def _fill(f: FeatureConfig, counts) -> str:
    if f.preprocessing.missing_value_strategy != "fill_with_mode":
        return f.preprocessing.fill_value
    value_counts, _ = counts
    if not value_counts:
        raise no_values_error(f, "fill_with_mode")
    return ranked(value_counts)[0]


def text_metadata(features: List[FeatureConfig], columns: Mapping[str, np.ndarray], counts, reducer) -> Dict[str, Any]:
    fills = {f.name: _fill(f, counts.get(f.name)) for f in features}
    texts = {f.name: filled(columns[f.name], fills[f.name]) for f in features}
    stats = global_token_stats(features, texts, reducer, name="data.metadata.text_tokens")
    out = {}
    for f in features:
        token_counts, longest = stats[f.name]
        p = f.preprocessing
        specials = [STOP, START, p.padding_symbol, p.unknown_symbol]
        idx2str = vocabulary(token_counts, p.most_common, specials)
        if p.sequence_length is not None:
            length = p.sequence_length
        else:
            length = longest + 2 if p.max_sequence_length is None else min(longest + 2, p.max_sequence_length)
        out[f.name] = {
            "type": "text", "column": f.column_name,
            "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": fills[f.name],
                              "tokenizer": p.tokenizer, "lowercase": p.lowercase, "most_common": p.most_common,
                              "padding": p.padding},
            "idx2str": idx2str, "str2idx": {t: i for i, t in enumerate(idx2str)},
            "str2freq": {t: int(token_counts.get(t, 0)) for t in idx2str}, "vocab_size": len(idx2str),
            "max_sequence_length": int(length), "pad_idx": 2, "padding_symbol": p.padding_symbol,
            "unknown_symbol": p.unknown_symbol,
        }
    return out


def token_matrix(values: np.ndarray, meta: Mapping[str, Any], name: str,
                 unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """[rows, max_sequence_length] int32 token ids: <SOS> tokens <EOS>, cut to length, then padded."""
    p = meta["preprocessing"]
    str2idx = meta["str2idx"]
    length = int(meta["max_sequence_length"])
    unknown = str2idx[meta["unknown_symbol"]]
    out = np.full((len(values), length), meta["pad_idx"], dtype=np.int32)
    unseen_total = 0
    for row, text in enumerate(filled(values, p["computed_fill_value"])):
        tokens = tokenize(text, p["tokenizer"], p["lowercase"], meta["unknown_symbol"])
        ids, unseen = token_ids(tokens, str2idx, unknown)
        unseen_total += unseen
        ids = ([str2idx[START]] + ids + [str2idx[STOP]])[:length]
        if p["padding"] == "right":
            out[row, :len(ids)] = ids
        else:
            out[row, length - len(ids):] = ids
    if unknown_counts is not None and unseen_total:
        unknown_counts[name] = unknown_counts.get(name, 0) + unseen_total
    return out


# ---- model -----------------------------------------------------------------------------------
class TokenEmbedding(nn.Module):
    """[batch, seq] ids -> [batch, seq, width]: trainable embeddings, or one-hot (sparse)."""

    def __init__(self, vocab_size: int, config: TextEncoderConfig):
        super().__init__()
        if config.representation == "dense":
            self.embed = nn.Embedding(vocab_size, config.embedding_size)
            self.embed.weight.requires_grad_(config.embeddings_trainable)
            self.width = config.embedding_size
        else:
            self.embed = nn.Embedding.from_pretrained(torch.eye(vocab_size), freeze=True)
            self.width = vocab_size
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed(ids.long()))


def reduce_sequence(hidden: torch.Tensor, ids: torch.Tensor, how: str, pad_idx: int) -> torch.Tensor:
    """[batch, seq, width] -> [batch, width]; `last` takes the last position that is not padding."""
    if how == "sum":
        return hidden.sum(1)
    if how in ("mean", "avg"):
        return hidden.mean(1)
    if how == "max":
        return hidden.max(1).values
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    last = torch.where(ids != pad_idx, positions, torch.zeros_like(positions)).max(1).values
    last = torch.clamp(last, max=hidden.shape[1] - 1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class TextEncoder(nn.Module):
    """Token ids -> one vector per row, by the configured encoder type."""

    def __init__(self, vocab_size: int, pad_idx: int, config: TextEncoderConfig):
        super().__init__()
        self.type = config.type
        self.pad_idx = pad_idx
        self.reduce = config.reduce_output or DEFAULT_REDUCE[config.type]
        self.embedding = TokenEmbedding(vocab_size, config)
        width = self.embedding.width
        if config.type == "parallel_cnn":
            self.convs = nn.ModuleList(_conv_branch(width, spec, config) for spec in _conv_specs(config))
            width = sum(branch[0].out_channels for branch in self.convs)
        elif config.type == "rnn":
            cell = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[config.cell_type]
            self.rnn = cell(width, config.state_size, num_layers=config.num_layers, batch_first=True,
                            bidirectional=config.bidirectional)
            width = config.state_size * (2 if config.bidirectional else 1)
        self.fc_stack = FCStack(width, *_fc_settings(config))
        self.output_size = self.fc_stack.output_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embedding(ids)
        if self.type == "parallel_cnn":
            x = hidden.transpose(1, 2)
            hidden = torch.cat([branch(x) for branch in self.convs], dim=1).transpose(1, 2)
        elif self.type == "rnn":
            hidden, _ = self.rnn(hidden)
        if hidden.shape[1] != ids.shape[1]:  # pooled: positions no longer line up with tokens
            reduced = reduce_sequence(hidden, torch.ones(hidden.shape[:2], device=ids.device), self.reduce, -1)
        else:
            reduced = reduce_sequence(hidden, ids, self.reduce, self.pad_idx)
        return self.fc_stack(reduced)


def _conv_specs(config: TextEncoderConfig) -> List[ConvLayerSpec]:
    if config.conv_layers is not None:
        return list(config.conv_layers)
    if config.num_conv_layers is not None:
        return [ConvLayerSpec() for _ in range(config.num_conv_layers)]
    return [ConvLayerSpec(filter_size=s) for s in DEFAULT_CONV_FILTER_SIZES]


class SameConv1d(nn.Conv1d):
    """A convolution whose output has the input's length (Ludwig's padding "same"), for any width.

    Padded explicitly: torch's padding="same" warns on every even width (2 and 4 are defaults here).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = self.kernel_size[0]
        return super().forward(nn.functional.pad(x, ((width - 1) // 2, width // 2)))


def _conv_branch(in_channels: int, spec: ConvLayerSpec, config: TextEncoderConfig) -> nn.Sequential:
    """Conv1d ('same' padding) -> activation -> optional pooling, on [batch, channels, seq]."""
    filters = spec.num_filters or config.num_filters
    parts: List[nn.Module] = [
        SameConv1d(in_channels, filters, spec.filter_size or config.filter_size, bias=config.use_bias),
        ACTIVATIONS[spec.activation or config.activation](),
    ]
    pool = spec.pool_size or config.pool_size
    if pool:
        pool_cls = nn.MaxPool1d if config.pool_function == "max" else nn.AvgPool1d
        parts.append(pool_cls(pool, stride=pool, ceil_mode=True))
    return nn.Sequential(*parts)


def _fc_settings(config: TextEncoderConfig):
    """(layers, num_layers, output_size, activation, dropout, norm, use_bias) of the stack after the reduction."""
    layers, num = config.fc_layers, config.num_fc_layers
    if config.type == "embed":
        return None, 0, config.output_size, config.activation, 0.0, None, True
    if config.type == "parallel_cnn" and layers is None and num is None:
        layers = [FCLayerSpec(output_size=512), FCLayerSpec(output_size=256)]
    activation = config.fc_activation or config.activation
    dropout = config.fc_dropout if config.fc_dropout is not None else config.dropout
    return layers, num or 0, config.output_size, activation, dropout, config.norm, config.use_bias


class TextInput(InputFeature):
    def __init__(self, name: str, meta: Mapping[str, Any], config: TextInputConfig):
        super().__init__(name)
        self.vocab_size = int(meta["vocab_size"])
        self.length = int(meta["max_sequence_length"])
        self.pad_idx = int(meta["pad_idx"])
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.randint(0, self.vocab_size, (batch_size, self.length))

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.int64)

    def build_encoder(self) -> nn.Module:
        return TextEncoder(self.vocab_size, self.pad_idx, self.config.encoder)


# ---- the type ----------------------------------------------------------------------------------
class TextType(FeatureType):
    name = "text"
    input_config = TextInputConfig
    output_config = TextOutputConfig
    output_class = OutputFeature
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = "sequence_softmax_cross_entropy"
    default_decoder = "generator"
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY, "pretrained_model_name_or_path": (None,), "vocab_file": (None,),
                          "ngram_size": ANY, "cache_encoder_embeddings": (False,), "compute_idf": (False,)},
        "encoder": {"vocab": ANY, "embeddings_on_cpu": ANY, "pretrained_embeddings": (None,), "skip": (False,),
                    "weights_initializer": ANY, "bias_initializer": ANY, "norm_params": (None,),
                    "max_sequence_length": ANY, "should_embed": (True,), "recurrent_dropout": (0, 0.0),
                    "recurrent_activation": ("sigmoid",), "recurrent_initializer": ANY, "unit_forget_bias": ANY},
    }
    ludwig_only_values = {
        "preprocessing.tokenizer": (LUDWIG_OTHER_TOKENIZERS, tuple(TOKENIZERS)),
        "encoder.type": (("stacked_cnn", "stacked_parallel_cnn", "cnnrnn", "transformer", "mamba", "passthrough",
                          "auto_transformer", "bert", "distilbert", "roberta", "gpt2", "t5", "albert", "xlnet",
                          "electra", "longformer", "camembert", "flaubert", "xlmroberta", "mt5", "tf_idf", "llm"),
                         ENCODERS),
        "encoder.reduce_output": (("concat", "attention", "none"), REDUCERS),
    }
    metadata_checked_keys = ("tokenizer", "lowercase", "most_common", "padding")

    def cast(self, array, feature, row_ids, path):
        return as_strings(array, feature, path).to_numpy(zero_copy_only=False)

    def needs_value_counts(self, feature):
        return feature.preprocessing.missing_value_strategy == "fill_with_mode"

    def metadata(self, features, columns, counts, reducer):
        return text_metadata(features, columns, counts, reducer)

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return token_matrix(values, meta, name, unknown_counts)

    def decode(self, meta, predictions):
        raise NotImplementedError("text is an input feature only")

    def input_feature(self, config, metadata):
        return TextInput(config.name, metadata[config.name], config)

    def output_feature(self, config, metadata):
        raise ConfigError("type text is not supported as an output feature by hvd_trainer.")


TEXT = TextType()
