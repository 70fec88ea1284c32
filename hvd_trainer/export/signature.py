"""The signature: the sidecar JSON that says how to feed an exported model and read its outputs.

An exported file holds every numeric step (hvd_trainer.export.graph); what a tensor graph cannot
hold portably is the string lookups: a category's vocabulary and a binary column's true/false
words. The signature carries those, in the words of training_set_metadata.json:

    {"format": "onnx", "model_file": "model.onnx",
     "inputs":  [{"name": "age", "column": "age", "type": "number", "dtype": "float64", "missing": "NaN"},
                 {"name": "color", "column": "color", "type": "category", "dtype": "int64", "missing": -1,
                  "lowercase": false, "str2idx": {"<UNK>": 0, "red": 1, ...}, "unknown_index": 0},
                 {"name": "member", "column": "member", "type": "binary", "dtype": "float64", "missing": "NaN",
                  "str2bool": {"yes": true, "no": false}, "true_strings": [...], "false_strings": [...],
                  "fallback_true_label": null}],
     "outputs": [{"name": "label_predictions", "feature": "label", "type": "category", "labels": [...]},
                 {"name": "label_probabilities", "feature": "label", "type": "category", "labels": [...]}]}

To feed a row: a number is its float (NaN if empty); a category is str2idx of its trimmed
(and, with lowercase, lowercased) string, unknown_index for a value not in it, -1 if empty; a
binary is 1.0/0.0 from str2bool, else from true_strings/false_strings (any case), else whether
it equals fallback_true_label, NaN if empty. `encode_rows` does exactly this, and needs nothing
but the signature and NumPy.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from hvd_trainer.export.graph import MISSING_INDEX
from hvd_trainer.features.binary import BOOL_FALSE_STRS, BOOL_TRUE_STRS

SIGNATURE_SUFFIX = ".signature.json"


def build_signature(input_types: Sequence[tuple], output_keys: Sequence[str], metadata: Mapping[str, Any],
                    export_format: str, model_file: str) -> Dict[str, Any]:
    """The signature of an ExportableModel: its inputs (with their lookups) and outputs, in order."""
    from hvd_trainer import __version__

    return {
        "format": export_format,
        "model_file": model_file,
        "hvd_trainer_version": __version__,
        "inputs": [_input_entry(name, kind, metadata[name]) for name, kind in input_types],
        "outputs": [_output_entry(key, metadata) for key in output_keys],
    }


def _input_entry(name: str, kind: str, meta: Mapping[str, Any]) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"name": name, "column": meta.get("column", name), "type": kind,
                             "dtype": "int64" if kind == "category" else "float64",
                             "missing": MISSING_INDEX if kind == "category" else "NaN"}
    if kind == "category":
        entry.update(lowercase=bool(meta["preprocessing"].get("lowercase")), str2idx=meta["str2idx"],
                     unknown_index=0)
    elif kind == "binary":
        entry.update(str2bool=meta["str2bool"], true_strings=sorted(BOOL_TRUE_STRS),
                     false_strings=sorted(BOOL_FALSE_STRS), fallback_true_label=meta["fallback_true_label"])
    return entry


def _output_entry(key: str, metadata: Mapping[str, Any]) -> Dict[str, Any]:
    feature = next(name for name in metadata if key.startswith(f"{name}_") and
                   key[len(name) + 1:] in ("predictions", "probabilities"))
    meta = metadata[feature]
    entry: Dict[str, Any] = {"name": key, "feature": feature, "type": meta["type"]}
    if meta["type"] == "category":
        entry["labels"] = meta["idx2str"]
    elif meta["type"] == "binary":
        entry["labels"] = meta["bool2str"]
    return entry


def encode_rows(signature: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]) -> Dict[str, np.ndarray]:
    """The exported model's inputs, by input name, from raw column values keyed by column name.

    A value may be a string (as read from a CSV file), a number, or None / NaN / "" for missing.
    """
    out = {}
    for spec in signature["inputs"]:
        values = [_missing_or_text(v) for v in columns[spec["column"]]]
        if spec["type"] == "category":
            out[spec["name"]] = np.array([_category_index(v, spec) for v in values], dtype=np.int64)
        elif spec["type"] == "binary":
            out[spec["name"]] = np.array([_binary_value(v, spec) for v in values], dtype=np.float64)
        else:
            out[spec["name"]] = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    return out


def decode_labels(signature: Mapping[str, Any], outputs: Mapping[str, np.ndarray]) -> Dict[str, List[Any]]:
    """`<feature>_predictions` in the data's own terms: category and binary labels; numbers as they are."""
    labels = {}
    for spec in signature["outputs"]:
        if not spec["name"].endswith("_predictions"):
            continue
        values = np.asarray(outputs[spec["name"]])
        if spec["type"] in ("category", "binary"):
            labels[spec["name"]] = [spec["labels"][int(v)] for v in values]
        else:
            labels[spec["name"]] = values.tolist()
    return labels


def _missing_or_text(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a number read as 3.0 means the category or flag "3", as Arrow writes it
    text = str(value).strip()
    return text or None


def _category_index(value: Optional[str], spec: Mapping[str, Any]) -> int:
    if value is None:
        return MISSING_INDEX
    key = value.lower() if spec["lowercase"] else value
    return int(spec["str2idx"].get(key, spec["unknown_index"]))


def _binary_value(value: Optional[str], spec: Mapping[str, Any]) -> float:
    if value is None:
        return math.nan
    if value in spec["str2bool"]:
        return 1.0 if spec["str2bool"][value] else 0.0
    low = value.lower()
    if low in spec["true_strings"] or low in spec["false_strings"]:
        return 1.0 if low in spec["true_strings"] else 0.0
    if spec["fallback_true_label"] is None:
        raise ValueError(f"{value!r} is neither true nor false for the binary input {spec['name']!r}; "
                         f"training saw only {sorted(spec['str2bool'])}.")
    return 1.0 if value == spec["fallback_true_label"] else 0.0
