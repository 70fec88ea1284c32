"""The date feature (input only): a date or time parsed into Ludwig's 9 components [year, month, day,
weekday, yearday, hour, minute, second, second_of_day]; encoded by Ludwig's `embed` (an embedding
per cyclic component) or `wave` (cos(2 pi x / period) per component). Both project the year with
a 1-unit linear layer, encode second_of_day as a wave, and end with a fully connected stack (none
by default for embed, one layer of 10 for wave).

Values are parsed with preprocessing.datetime_format (strptime) when set, else (or when that
fails) by dateutil's parser, which takes the parts a value leaves out ("2020-05") from 1970-01-01
(Ludwig's from the current date, which differs between runs); numbers are POSIX timestamps
(milli/micro/nanoseconds are scaled to seconds, as Ludwig does); Arrow date and timestamp columns are read as they are. A value that
cannot be parsed is refused, naming its row (Ludwig logs it and fills it instead).

Metadata: the computed fill value and datetime_format. A missing date takes fill_value; when
fill_value is empty, Ludwig fills with the current time, which differs between ranks and runs,
so here it is the Unix epoch (1970-01-01 00:00:00) instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.features.arrays import describe_feature, missing_mask
from hvd_trainer.features.base import ANY, FeatureType
from hvd_trainer.features.columns import column_tensor
from hvd_trainer.features.config import FeatureConfig, OutputFeatureConfig, config_field
from hvd_trainer.features.layers import ACTIVATIONS, NORMS, FCLayerSpec, FCStack
from hvd_trainer.features.model_parts import InputFeature, OutputFeature

DATE_VECTOR_LENGTH = 9
EPOCH = datetime(1970, 1, 1)
MISSING_VALUE_STRATEGIES = ("fill_with_const", "drop_row")
#: (name, embedding vocabulary = period, column in the date vector, stored 1-based)
COMPONENTS = (("month", 12, 1, True), ("day", 31, 2, True), ("weekday", 7, 3, False), ("yearday", 366, 4, True),
              ("hour", 24, 5, False), ("minute", 60, 6, False), ("second", 60, 7, False))
SECONDS_PER_DAY = 86400
#: log10 of a timestamp in seconds in this era (Ludwig reads it off the clock: 9 until the year 2286).
_SECONDS_SCALE = 9


# ---- config ----------------------------------------------------------------------------------
@dataclass
class DatePreprocessing:
    missing_value_strategy: str = config_field("fill_with_const", "What to do with a missing value.",
                                               choices=MISSING_VALUE_STRATEGIES)
    fill_value: str = config_field("", "The date used by fill_with_const (empty: 1970-01-01).")
    datetime_format: Optional[str] = config_field(None, "strptime format of the values (null: inferred per value).")


@dataclass
class DateEncoderConfig:
    type: str = config_field("embed", "embed (learned per-component embeddings) or wave (cosines).",
                             choices=("embed", "wave"))
    embedding_size: int = config_field(10, "embed: width of each component's embedding.", min=1)
    dropout: float = config_field(0.0, "Dropout on the embeddings and in the layers.", min=0, max=0.999)
    fc_layers: Optional[List[FCLayerSpec]] = config_field(None, "Fully connected layers at the end.")
    num_fc_layers: Optional[int] = config_field(None, "Number of layers (null: 0 for embed, 1 for wave).", min=0)
    output_size: int = config_field(10, "Width of each fully connected layer.", min=1)
    activation: str = config_field("relu", "Activation of the layers.", choices=tuple(ACTIVATIONS))
    norm: Optional[str] = config_field(None, "batch or layer normalization in the layers.", choices=NORMS)
    use_bias: bool = config_field(True, "Give the layers a bias.")


@dataclass
class DateInputConfig(FeatureConfig):
    preprocessing: DatePreprocessing = field(default_factory=DatePreprocessing)
    encoder: DateEncoderConfig = field(default_factory=DateEncoderConfig)


@dataclass
class DateOutputConfig(OutputFeatureConfig):
    def __post_init__(self):
        raise ConfigError(
            "type date is not supported as an output feature (Ludwig has no date output either). Use the date as an "
            "input feature, or predict one of its parts (year, month...) as a number or category output."
        )


# ---- casting ---------------------------------------------------------------------------------
def date_vector(dt: datetime) -> Tuple[int, ...]:
    """Ludwig's 9 components of a datetime."""
    yearday = dt.toordinal() - date(dt.year, 1, 1).toordinal() + 1
    second_of_day = dt.hour * 3600 + dt.minute * 60 + dt.second
    return (dt.year, dt.month, dt.day, dt.weekday(), yearday, dt.hour, dt.minute, dt.second, second_of_day)


def from_timestamp(value: float) -> datetime:
    """A POSIX timestamp in seconds, or in milli/micro/nanoseconds (scaled down as Ludwig does)."""
    if value > 0:
        scale = math.floor(math.log10(value))
        if scale > _SECONDS_SCALE:
            value = value / 10 ** (scale - _SECONDS_SCALE)
    return datetime.fromtimestamp(value, tz=timezone.utc).replace(tzinfo=None)


def parse_date(value: Any, datetime_format: Optional[str]) -> datetime:
    """A datetime from a string (strptime with the format, else dateutil), a number or a date. ValueError if not."""
    from dateutil import parser

    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, (int, float)):
        return from_timestamp(float(value))
    text = str(value).strip()
    if datetime_format:
        try:
            return datetime.strptime(text, datetime_format)
        except ValueError:
            pass
    try:
        return parser.parse(text, default=EPOCH).replace(tzinfo=None)
    except (parser.ParserError, OverflowError, ValueError):
        try:
            return from_timestamp(float(text))
        except (ValueError, OverflowError, OSError):
            raise ValueError(text) from None


def cast_date(array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
    """An object array of 9-tuples (None where missing); a value that is not a date is refused."""
    fmt = feature.preprocessing.datetime_format
    out = np.empty(len(array), dtype=object)
    seen: Dict[Any, Tuple[int, ...]] = {}
    for i, v in enumerate(array.to_pylist()):
        if v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v)):
            out[i] = None
            continue
        if v not in seen:
            try:
                seen[v] = date_vector(parse_date(v, fmt))
            except (ValueError, OverflowError, OSError):
                raise DataError(
                    f"The {describe_feature(feature)} of {path} holds {v!r} in row {int(row_ids[i])} (counting data "
                    "rows from 0), which could not be read as a date. Set preprocessing.datetime_format to the "
                    "column's format (e.g. '%d/%m/%Y'), fix the value, or leave the cell empty to mark it missing."
                ) from None
        out[i] = seen[v]
    return out


# ---- metadata and transform ------------------------------------------------------------------
def date_metadata(f: FeatureConfig) -> Dict[str, Any]:
    p = f.preprocessing
    if p.fill_value.strip():
        try:
            fill = date_vector(parse_date(p.fill_value, p.datetime_format))
        except ValueError:
            raise ConfigError(
                f"preprocessing.fill_value of the date feature {f.name!r} is {p.fill_value!r}, which is not a date. "
                "Write a date in the column's format, or leave it empty (missing dates become 1970-01-01)."
            ) from None
    else:
        fill = date_vector(EPOCH)
    return {"type": "date", "column": f.column_name,
            "preprocessing": {"missing_value_strategy": p.missing_value_strategy, "computed_fill_value": list(fill),
                              "datetime_format": p.datetime_format}}


def date_matrix(values: np.ndarray, meta) -> np.ndarray:
    """[rows, 9] int32 date vectors, missing rows filled."""
    out = np.empty((len(values), DATE_VECTOR_LENGTH), dtype=np.int32)
    missing = missing_mask(values)
    fill = meta["preprocessing"]["computed_fill_value"]
    for i, v in enumerate(values):
        out[i] = fill if missing[i] else v
    return out


# ---- model -----------------------------------------------------------------------------------
def periodic(x: torch.Tensor, period: int) -> torch.Tensor:
    return torch.cos(x * (2 * math.pi / period))


class DateEncoder(nn.Module):
    """[batch, 9] date vectors -> [batch, output]: year projection, components, second_of_day wave, FC stack."""

    def __init__(self, config: DateEncoderConfig):
        super().__init__()
        self.type = config.type
        self.year_fc = nn.Linear(1, 1, bias=config.use_bias)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        if config.type == "embed":
            self.embeddings = nn.ModuleList(nn.Embedding(vocab, config.embedding_size) for _, vocab, _, _ in COMPONENTS)
            width = 1 + len(COMPONENTS) * config.embedding_size + 1
        else:
            width = 1 + len(COMPONENTS) + 1
        num_layers = config.num_fc_layers if config.num_fc_layers is not None else (0 if config.type == "embed" else 1)
        self.fc_stack = FCStack(width, config.fc_layers, num_layers, config.output_size, config.activation,
                                config.dropout, config.norm, config.use_bias)
        self.output_size = self.fc_stack.output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.long()
        parts = [self.year_fc(x[:, 0:1].float())]
        for i, (_, vocab, col, one_based) in enumerate(COMPONENTS):
            value = x[:, col] - 1 if one_based else x[:, col]
            if self.type == "embed":
                parts.append(self.dropout(self.embeddings[i](value.clamp(0, vocab - 1))))
            else:
                parts.append(periodic(x[:, col:col + 1].float(), vocab))
        parts.append(periodic(x[:, 8:9].float(), SECONDS_PER_DAY))
        return self.fc_stack(torch.cat(parts, dim=1))


class DateInput(InputFeature):
    def __init__(self, name: str, config: DateInputConfig):
        super().__init__(name)
        self.config = config

    def create_sample_input(self, batch_size: int) -> torch.Tensor:
        return torch.tensor([list(date_vector(datetime(2013, 2, 26)))] * batch_size, dtype=torch.int32)

    def input_tensor(self, column) -> torch.Tensor:
        return column_tensor(column, torch.int32)

    def build_encoder(self) -> nn.Module:
        return DateEncoder(self.config.encoder)


# ---- the type ----------------------------------------------------------------------------------
class DateType(FeatureType):
    name = "date"
    input_config = DateInputConfig
    output_config = DateOutputConfig
    output_class = OutputFeature
    missing_value_strategies = MISSING_VALUE_STRATEGIES
    default_loss = ""
    default_decoder = ""
    ludwig_noop_keys = {
        "preprocessing": {"computed_fill_value": ANY},
        "encoder": {"skip": (False,), "embeddings_on_cpu": ANY, "weights_initializer": ANY, "bias_initializer": ANY,
                    "norm_params": (None,)},
    }
    metadata_checked_keys = ("datetime_format",)

    def cast(self, array, feature, row_ids, path):
        return cast_date(array, feature, row_ids, path)

    def needs_value_counts(self, feature):
        return False

    def metadata(self, features, columns, counts, reducer):
        return {f.name: date_metadata(f) for f in features}

    def transform(self, values, meta, name, row_ids, path, unknown_counts=None):
        return date_matrix(values, meta)

    def decode(self, meta, predictions):
        raise NotImplementedError("date is an input feature only")

    def input_feature(self, config, metadata):
        return DateInput(config.name, config)

    def output_feature(self, config, metadata):
        raise ConfigError("type date is not supported as an output feature.")


DATE = DateType()
