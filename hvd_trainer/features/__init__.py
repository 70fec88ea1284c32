"""Feature types: the registry from a config's `type:` to the object that knows that type.

Each type lives in one module (number.py, category.py, binary.py, set.py, text.py, vector.py,
date.py): its config dataclasses, how its column is cast, summarised (metadata) and
transformed, its encoder and output (loss, predictions, metrics). To add a type, write its module and add its FeatureType below.
hvd_trainer.data and hvd_trainer.models both ask this registry; neither knows the other.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping

from hvd_trainer.features.base import FeatureType
from hvd_trainer.features.binary import BINARY
from hvd_trainer.features.category import CATEGORY
from hvd_trainer.features.config import FeatureConfig
from hvd_trainer.features.date import DATE
from hvd_trainer.features.number import NUMBER
from hvd_trainer.features.set import SET
from hvd_trainer.features.text import TEXT
from hvd_trainer.features.vector import VECTOR

#: Every feature type by name, in the order error messages list them.
FEATURE_TYPES: Dict[str, FeatureType] = {t.name: t for t in (NUMBER, CATEGORY, BINARY, SET, TEXT, VECTOR, DATE)}


def feature_type(name: str) -> FeatureType:
    """The FeatureType registered as `name` (configs are validated, so it exists)."""
    return FEATURE_TYPES[name]


def check_metadata_matches(features: Iterable[FeatureConfig], metadata: Mapping[str, Any]) -> None:
    """Refuse training set metadata that was computed for other features (a different config)."""
    for f in features:
        feature_type(f.type).check_metadata(f, metadata.get(f.name))


def higher_is_better(metric_name: str) -> bool:
    """Whether a larger value of this metric is an improvement, as its Metric class declares.

    A name that no registered type's output reports (say, a metric of a user's own
    OutputFeature) counts as higher-is-better.
    """
    for ftype in FEATURE_TYPES.values():
        for metric in ftype.output_class.metric_types:
            if metric.name == metric_name:
                return metric.higher_is_better
    return True


__all__ = ["FEATURE_TYPES", "FeatureType", "check_metadata_matches", "feature_type", "higher_is_better"]
