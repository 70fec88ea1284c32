"""The `defaults:` section: per-type settings merged into every feature of that type, as Ludwig does.

Ludwig's rule (ludwig.schema.model_types.utils.merge_with_defaults), restated:

1. an input feature takes its type's `preprocessing` and `encoder` defaults; an output feature
   takes its type's `decoder` and `loss` defaults (not preprocessing, not encoder);
2. the merge is recursive and a key the feature sets wins over the default;
3. a section whose `type` differs from the default's (say the default encoder is sparse and the
   feature asks for dense) is taken from the feature alone: the defaults of one encoder do not
   leak into another.

Older Ludwig wrote per-type defaults under `preprocessing: {category: {...}}`; those move into
`defaults` first (Ludwig's own upgrade does the same). Defaults of a type that no feature uses
change nothing, as in Ludwig (a fully rendered Ludwig config carries defaults for every type).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, Mapping

from hvd_trainer.config_schema import did_you_mean
from hvd_trainer.errors import ConfigError

#: Every feature type Ludwig's defaults section may name.
LUDWIG_TYPES = ("audio", "bag", "binary", "category", "date", "h3", "image", "number", "sequence", "set", "text",
                "timeseries", "vector")
#: The sections a type's defaults may hold.
SECTIONS = ("preprocessing", "encoder", "decoder", "loss")
_INPUT_ONLY = ("preprocessing", "encoder")
_OUTPUT_ONLY = ("decoder", "loss")


def with_defaults_applied(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of the config whose features carry their type's defaults; `defaults` is kept, checked."""
    out = copy.deepcopy(dict(config))
    defaults = _collect_defaults(out)
    if not defaults:
        return out
    for kind, excluded in (("input_features", _OUTPUT_ONLY), ("output_features", _INPUT_ONLY)):
        features = out.get(kind)
        if not isinstance(features, list):
            continue
        for i, feature in enumerate(features):
            if isinstance(feature, Mapping) and isinstance(feature.get("type"), str):
                features[i] = merge_sections(defaults.get(feature["type"], {}), feature, excluded)
    out["defaults"] = defaults
    return out


def merge_sections(default: Mapping[str, Any], feature: Mapping[str, Any], excluded: Iterable[str]) -> Dict[str, Any]:
    """`feature` over `default` (rule 2), without the excluded sections, sections of another type apart (rule 3)."""
    merged = {k: copy.deepcopy(v) for k, v in default.items() if k not in set(excluded)}
    for key, value in feature.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping) and value.get("type", base.get("type")) == base.get("type"):
            merged[key] = merge_sections(base, value, excluded)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _collect_defaults(config: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The checked defaults section, with older Ludwig's `preprocessing: {<type>: ...}` moved into it."""
    raw = config.get("defaults")
    if raw is not None and not isinstance(raw, Mapping):
        raise ConfigError(
            f"defaults must be a mapping from feature types to their settings, e.g. 'defaults: {{category: {{encoder: "
            f"{{type: sparse}}}}}}', but it is {type(raw).__name__}."
        )
    defaults: Dict[str, Dict[str, Any]] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (raw or {}).items()}
    preprocessing = config.get("preprocessing")
    if isinstance(preprocessing, Mapping):
        moved = {k: preprocessing[k] for k in preprocessing if k in LUDWIG_TYPES}
        if moved:
            config["preprocessing"] = {k: v for k, v in preprocessing.items() if k not in moved}
            for ftype, settings in moved.items():
                entry = defaults.setdefault(ftype, {})
                if isinstance(entry, dict):
                    entry["preprocessing"] = merge_sections(settings or {}, entry.get("preprocessing") or {}, ())
    for ftype, entry in defaults.items():
        _check_entry(ftype, entry)
    return {k: v for k, v in defaults.items() if v}


def _check_entry(ftype: str, entry: Any) -> None:
    if ftype not in LUDWIG_TYPES:
        raise ConfigError(
            f"defaults.{ftype} names no feature type.{did_you_mean(ftype, LUDWIG_TYPES)} The defaults section is "
            f"keyed by feature type: {', '.join(LUDWIG_TYPES)}."
        )
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise ConfigError(
            f"defaults.{ftype} must be a mapping of sections ({', '.join(SECTIONS)}), but it is {type(entry).__name__}."
        )
    for section, value in entry.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"defaults.{ftype}.{section} is not a section of a feature's defaults."
                f"{did_you_mean(section, SECTIONS)} A type's defaults may set: {', '.join(SECTIONS)}."
            )
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(
                f"defaults.{ftype}.{section} must be a mapping of keys to values, but it is {type(value).__name__}."
            )
