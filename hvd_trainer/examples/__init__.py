"""Built-in example jobs: scikit-learn's bundled datasets with a Ludwig-style config each.

    digits         64 number features pixel_0..pixel_63 -> category `label` (10 classes)
    breast_cancer  30 number features                   -> binary `diagnosis` (malignant/benign)
    diabetes       10 number features                   -> number `target`
    breast_cancer_tabnet  the breast_cancer data through the tabnet combiner
    movie_reviews  Ludwig's rotten_tomatoes columns (set, category, binary, number, text) -> binary
    movie_genres   text `plot`                          -> set `genres`
    iris_vector    vector `measurements` (iris)         -> category `species`
    daily_rentals  date `day`                           -> number `rentals`
    access         9 category features (generated)      -> binary `ACTION` (Ludwig's lbfgs example)

The data ships with scikit-learn or is generated (hvd_trainer.examples.generated), so nothing
is downloaded.
OPTION_EXAMPLES are configs of one Ludwig option each, on one of these datasets.
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np

EXAMPLES = ("digits", "breast_cancer", "diabetes", "breast_cancer_tabnet", "movie_reviews", "movie_genres",
            "iris_vector", "daily_rentals", "access")

#: One config per Ludwig option, and the dataset (of EXAMPLES) it runs on.
OPTION_EXAMPLES = {
    "access_defaults": "access",                # defaults: section; dense and sparse category encoders
    "access_datetime_split": "access",          # split: datetime
    "digits_stratified": "digits",              # split: stratify
    "digits_decoder_layers": "digits",          # output decoder fc_layers, fc_norm, fc_dropout
    "digits_class_weights": "digits",           # loss.class_weights of a category output
    "breast_cancer_oversample": "breast_cancer",    # preprocessing.oversample_minority
    "breast_cancer_undersample": "breast_cancer",   # preprocessing.undersample_majority
    "breast_cancer_loss": "breast_cancer",      # positive_class_weight, robust_lambda, confidence_penalty
}
#: Examples that reuse another example's data: {example: the dataset it trains on}.
DATASET_OF = {"breast_cancer_tabnet": "breast_cancer", **OPTION_EXAMPLES}


def example_config_path(name: str) -> str:
    """Path of the example's YAML config inside the package."""
    _check_name(name)
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")


def _check_name(name: str) -> None:
    if name not in EXAMPLES and name not in OPTION_EXAMPLES:
        from hvd_trainer.errors import ConfigError

        raise ConfigError(f"There is no example named {name!r}; the examples are: "
                          f"{', '.join(EXAMPLES + tuple(OPTION_EXAMPLES))}.")


def _columns(name: str) -> Tuple[List[str], Dict[str, np.ndarray]]:
    from sklearn import datasets

    from hvd_trainer.examples.generated import GENERATED

    if name in GENERATED:
        return GENERATED[name]()
    if name == "digits":
        data = datasets.load_digits()
        names = [f"pixel_{i}" for i in range(data.data.shape[1])]
        target = ("label", data.target.astype(np.int64))
    elif name == "breast_cancer":
        data = datasets.load_breast_cancer()
        names = [n.replace(" ", "_") for n in data.feature_names]
        # sklearn codes 0 = malignant, 1 = benign; the config says which label means true.
        target = ("diagnosis", np.where(data.target == 0, "malignant", "benign").astype(object))
    else:
        data = datasets.load_diabetes()
        names = list(data.feature_names)
        target = ("target", data.target.astype(np.float64))
    columns = {n: data.data[:, i] for i, n in enumerate(names)}
    columns[target[0]] = target[1]
    return names + [target[0]], columns


def write_example_dataset(name: str, path: str) -> str:
    """Write example `name` to `path` (CSV, or Parquet for .parquet/.pq) and return the path.

    The file is written under a temporary name and renamed, so ranks that all write the same
    example at once never read a half-written file.
    """
    import pyarrow as pa

    _check_name(name)
    order, columns = _columns(DATASET_OF.get(name, name))
    table = pa.table({n: columns[n] for n in order})
    path = str(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        if path.lower().endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
