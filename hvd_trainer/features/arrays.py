"""Column helpers that several feature types share: missing values, strings, lookups, ranking,
and the wording that names a feature's column in data errors."""
from __future__ import annotations

from typing import Any, List, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hvd_trainer.errors import DataError
from hvd_trainer.features.config import FeatureConfig


def describe_feature(feature: FeatureConfig) -> str:
    """"column 'x' (number feature)", naming the feature too when its column differs."""
    column = feature.column_name
    return f"column {column!r} ({feature.type} feature {feature.name!r})" if column != feature.name else \
        f"column {column!r} ({feature.type} feature)"


def missing_mask(values: np.ndarray) -> np.ndarray:
    """True where a cast column holds a missing value (NaN in a number column, None otherwise)."""
    if values.dtype == object:
        return np.equal(values, None)
    return np.isnan(values)


def as_strings(array: pa.Array, feature: FeatureConfig, path: str) -> pa.Array:
    """The column as trimmed strings (numbers are written as Arrow prints them)."""
    t = array.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        try:
            array = pc.cast(array, pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataError(
                f"The {describe_feature(feature)} of {path} has the type {t}, which cannot be read as categories. "
                "Store the column as strings or numbers."
            ) from None
    return pc.utf8_trim_whitespace(array)


def lookup(values: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Position of each value in keys (-1 where absent or missing), in Arrow's hash lookup."""
    found = pc.index_in(pa.array(values, type=pa.string()), value_set=pa.array(list(keys), type=pa.string()))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def ranked(counts: Mapping[Any, int]) -> List[Any]:
    """Values by decreasing count; ties by value, so every rank and run agrees on the order."""
    return sorted(counts, key=lambda v: (-counts[v], str(v)))


def no_values_error(feature: FeatureConfig, strategy: str) -> DataError:
    """The error for a fill value that must be computed from a column with no values."""
    return DataError(
        f"The {describe_feature(feature)} has no values at all in the training set, so {strategy} has nothing to "
        "compute its fill value from. Use missing_value_strategy: fill_with_const with a fill_value, or remove the "
        "feature."
    )
