"""FeatureType: everything hvd_trainer does that depends on a feature's type, as one contract.

A type module (number.py, category.py, binary.py) subclasses FeatureType once and registers an
instance in hvd_trainer.features. The config loader, the data pipeline and the model builder ask
that object and never compare `feature.type` themselves, so a new type is one new module.

The three stages a type takes part in:

- config: its input/output dataclasses, its missing-value strategies, its defaults, and which
  Ludwig keys and values it ignores or refuses;
- data: cast a raw column, compute training set metadata, transform with saved metadata, and
  decode predictions back to the data's own terms;
- model: the InputFeature (encoder) and OutputFeature (decoder size, loss, metrics) it builds.
"""
from __future__ import annotations

import abc
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

import numpy as np
import pyarrow as pa

from hvd_trainer.errors import DataError
from hvd_trainer.features.config import FeatureConfig
from hvd_trainer.features.model_parts import InputFeature, OutputFeature
from hvd_trainer.features.reducer import Reducer

#: In a table of harmless Ludwig keys: a key whose value never matters here (Ludwig fills it in itself).
ANY = object()

#: Per feature name: (value counts over the training rows, number of missing values).
ValueCounts = Mapping[str, Tuple[Mapping[Any, int], int]]


class FeatureType(abc.ABC):
    """One feature type (number, category, ...): its config, preprocessing and model parts."""

    # ---- config ----------------------------------------------------------------------------
    #: The feature's `type:` in the config.
    name: str
    #: The dataclasses of an input and of an output feature of this type.
    input_config: Type[FeatureConfig]
    output_config: Type[FeatureConfig]
    #: The OutputFeature class it builds (its metric_types say which metrics it reports).
    output_class: Type[OutputFeature]
    missing_value_strategies: Tuple[str, ...]
    #: The one loss and decoder an output of this type has (Ludwig's defaults).
    default_loss: str
    default_decoder: str
    #: Ludwig keys of this type's `preprocessing` and `encoder` sections that change nothing
    #: here: {section: {key: the harmless values, or ANY}}.
    ludwig_noop_keys: Mapping[str, Mapping[str, Any]] = {}
    #: Values Ludwig accepts that hvd_trainer refuses: {"section.key": (refused, supported)}.
    ludwig_only_values: Mapping[str, Tuple[Tuple[Any, ...], Tuple[str, ...]]] = {}
    #: Preprocessing settings that saved metadata must share with the config (the transform reads them).
    metadata_checked_keys: Tuple[str, ...] = ()
    #: An input of this type is one float32 value per row and its own encoding (a ScalarInput):
    #: the model takes all such inputs as one [rows, k] block, which the data pipeline builds.
    dense_input: bool = False

    # ---- data ------------------------------------------------------------------------------
    @abc.abstractmethod
    def cast(self, array: pa.Array, feature: FeatureConfig, row_ids: np.ndarray, path: str) -> np.ndarray:
        """Typed values of the feature's raw column, with missing values as NaN or None."""

    def needs_value_counts(self, feature: FeatureConfig) -> bool:
        """Whether compute_metadata must count the feature's values over the training set."""
        return True

    @abc.abstractmethod
    def metadata(self, features: List[FeatureConfig], columns: Mapping[str, np.ndarray], counts: ValueCounts,
                 reducer: Reducer) -> Dict[str, Dict[str, Any]]:
        """{feature name: metadata} of every feature of this type, from the training rows.

        Every rank calls this with the same features; any collective runs in a fixed order.
        """

    @abc.abstractmethod
    def transform(self, values: np.ndarray, meta: Mapping[str, Any], name: str, row_ids: np.ndarray, path: str,
                  unknown_counts: Optional[Dict[str, int]] = None) -> np.ndarray:
        """Model-ready array of one cast column, using saved metadata only."""

    @abc.abstractmethod
    def decode(self, meta: Mapping[str, Any], predictions: np.ndarray) -> np.ndarray:
        """Predictions in the data's own terms (labels, unnormalised numbers)."""

    def check_metadata(self, feature: FeatureConfig, meta: Optional[Mapping[str, Any]]) -> None:
        """Refuse saved metadata that was computed for another config."""
        if meta is None or meta.get("type") != feature.type:
            found = "is missing" if meta is None else f"has type {meta.get('type')!r}"
            raise DataError(
                f"The {feature.type} feature {feature.name!r} {found} in the saved training set metadata, so the "
                "metadata was computed for a different config. Use the config the model was trained with "
                "(model_hyperparameters), or retrain."
            )
        for key in self.metadata_checked_keys:
            if meta["preprocessing"].get(key) != getattr(feature.preprocessing, key):
                raise DataError(
                    f"Feature {feature.name!r} has preprocessing.{key} {getattr(feature.preprocessing, key)!r} in the "
                    f"config but {meta['preprocessing'].get(key)!r} in the saved training set metadata; the data "
                    "would be transformed differently from training. Use the config the model was trained with, "
                    "or retrain."
                )

    # ---- model -----------------------------------------------------------------------------
    @abc.abstractmethod
    def input_feature(self, config: FeatureConfig, metadata: Mapping[str, Any]) -> InputFeature:
        """The model input for one configured feature, sized from its training set metadata."""

    @abc.abstractmethod
    def output_feature(self, config: FeatureConfig, metadata: Mapping[str, Any]) -> OutputFeature:
        """The model output (loss, metrics) for one configured feature, sized from its metadata."""
