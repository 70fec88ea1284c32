"""The feature-type registry: each type is one module that declares everything about itself."""
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from hvd_trainer.features import FEATURE_TYPES, FeatureType, feature_type, higher_is_better
from hvd_trainer.features.config import FeatureConfig, OutputFeatureConfig
from hvd_trainer.features.model_parts import OutputFeature
from hvd_trainer.features.reducer import Reducer
from hvd_trainer.metrics import LOSS, Metric


def test_every_registered_type_is_a_feature_type_under_its_own_name():
    assert list(FEATURE_TYPES) == ["number", "category", "binary", "set", "text", "vector", "date"]
    input_only = {"text", "date"}  # their output configs refuse themselves with a clear error
    for name, ftype in FEATURE_TYPES.items():
        assert isinstance(ftype, FeatureType) and ftype.name == name and feature_type(name) is ftype
        assert issubclass(ftype.input_config, FeatureConfig) and issubclass(ftype.output_config, OutputFeatureConfig)
        assert issubclass(ftype.output_class, OutputFeature)
        assert ftype.output_class.type == (OutputFeature.type if name in input_only else name)
        defaults = {f.name: f for f in dataclasses.fields(ftype.input_config)}["preprocessing"].default_factory()
        assert defaults.missing_value_strategy in ftype.missing_value_strategies


@pytest.mark.parametrize("name", sorted(FEATURE_TYPES))
def test_every_output_reports_its_loss_first_and_declares_each_metric(name):
    metric_types = FEATURE_TYPES[name].output_class.metric_types
    assert metric_types[0].name == LOSS
    assert all(issubclass(m, Metric) and m.name != Metric.name for m in metric_types)


@pytest.mark.parametrize("metric, higher", [
    ("loss", False), ("mean_squared_error", False), ("mean_absolute_error", False),
    ("accuracy", True), ("hits_at_k", True), ("roc_auc", True), ("r2", True),
])
def test_the_direction_of_a_metric_is_the_one_its_class_declares(metric, higher):
    assert higher_is_better(metric) is higher


def test_a_metric_no_output_reports_counts_as_higher_is_better():
    assert higher_is_better("my_own_score") is True


def test_each_type_casts_and_transforms_its_own_column():
    """A string column through each type's cast and transform, with metadata from those values."""
    raw = pa.array(["1", "0", None, "1"])
    rows = np.arange(4)
    for name in FEATURE_TYPES:
        ftype = feature_type(name)
        config = ftype.input_config(name="x", type=name)
        if name == "vector":  # a missing vector needs a fill value of the vector's size
            config.preprocessing.fill_value = "0"
        values = ftype.cast(raw, config, rows, "data.csv")
        counts = {"x": ({"1": 2, "0": 1} if values.dtype == object else {1.0: 2, 0.0: 1}, 1)}
        meta = ftype.metadata([config], {"x": values}, counts, Reducer())["x"]
        assert meta["type"] == name
        out = ftype.transform(values, meta, "x", rows, "data.csv")
        assert out.shape[0] == 4 and not np.isnan(out.astype(np.float64)).any()
