"""A table the examples generate themselves (nothing to download): `access`, shaped like the
Amazon employee-access data of Ludwig's lbfgs example.

Nine categorical id columns; ACTION (1 = access granted) is an additive score of three of them
above its median, with 5% of the labels flipped, so a linear model of the one-hot ids learns it.
`split` is a fixed split (0/1/2) and `request_date` a day per row, for the split examples.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

ACCESS_COLUMNS = ("RESOURCE", "MGR_ID", "ROLE_ROLLUP_1", "ROLE_ROLLUP_2", "ROLE_DEPTNAME", "ROLE_TITLE",
                  "ROLE_FAMILY_DESC", "ROLE_FAMILY", "ROLE_CODE")


def access_columns(n: int = 4000, seed: int = 0) -> Tuple[List[str], Dict[str, np.ndarray]]:
    """(column order, columns) of the generated access table."""
    rng = np.random.default_rng(seed)
    columns: Dict[str, np.ndarray] = {}
    score = np.zeros(n)
    for i, name in enumerate(ACCESS_COLUMNS):
        ids = rng.integers(0, 10 + 4 * i, n)
        if name in ("RESOURCE", "MGR_ID", "ROLE_TITLE"):
            score += rng.normal(0, 1, int(ids.max()) + 1)[ids]
        columns[name] = np.array([f"{name.lower()}_{v}" for v in ids], dtype=object)
    action = (score > np.median(score)).astype(np.int64)
    flip = rng.random(n) < 0.05
    columns["ACTION"] = np.where(flip, 1 - action, action)
    columns["split"] = rng.choice([0, 1, 2], n, p=[0.7, 0.1, 0.2])
    days = rng.integers(0, 3 * 365, n)
    columns["request_date"] = np.array([str(np.datetime64("2021-01-01") + int(d)) for d in days], dtype=object)
    order = list(ACCESS_COLUMNS) + ["ACTION", "split", "request_date"]
    return order, columns
