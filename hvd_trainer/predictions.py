"""predictions.csv: one row per input row, in input order, with labels in the data's own terms."""
from __future__ import annotations

import csv
import io
import os
from typing import Dict, Mapping

import numpy as np

from hvd_trainer.checkpoint import atomic_write_text

PREDICTIONS_FILE = "predictions.csv"


def prediction_columns(columns: Mapping[str, np.ndarray], output_features, metadata) -> Dict[str, list]:
    """Named output columns: <f>_predictions, and <f>_probabilities_<class> for each class."""
    from hvd_trainer.data.preprocessing import decode_predictions

    out: Dict[str, list] = {}
    for name in output_features:
        meta = metadata[name]
        out[f"{name}_predictions"] = list(decode_predictions(meta, columns[f"{name}_predictions"]))
        probs = columns.get(f"{name}_probabilities")
        if probs is None:
            continue
        if probs.ndim == 2:
            labels = meta.get("idx2str") or [str(i) for i in range(probs.shape[1])]
            for i, label in enumerate(labels):
                out[f"{name}_probabilities_{label}"] = probs[:, i].tolist()
        else:
            out[f"{name}_probability"] = probs.tolist()
    return out


def write_predictions_csv(columns, output_features, metadata, output_directory: str) -> str:
    os.makedirs(output_directory, exist_ok=True)
    path = os.path.join(output_directory, PREDICTIONS_FILE)
    named = prediction_columns(columns, output_features, metadata) if columns else {}
    header = list(named)
    rows = zip(*named.values()) if named else []
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buf.getvalue())
    return path
