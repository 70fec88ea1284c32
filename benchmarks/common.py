"""Shared pieces of the benchmarks: the synthetic task, the MLP, launching under horovodrun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import List

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def synthetic_table(n_rows: int, n_features: int = 64, n_classes: int = 10, seed: int = 0):
    """sklearn's make_classification, as float32 features and int64 labels."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_rows, n_features=n_features, n_informative=n_features // 2,
                               n_redundant=n_features // 4, n_classes=n_classes, random_state=seed)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), y.astype(np.int64)


def mlp(n_features: int = 64, n_classes: int = 10, hidden: int = 128, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(n_features, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, n_classes))


def env() -> dict:
    e = dict(os.environ)
    e.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", PYTHONUNBUFFERED="1",
             PYTHONPATH=REPO + os.pathsep + e.get("PYTHONPATH", ""))
    return e


def horovodrun(np_: int, args: List[str], timeout: int = 1200) -> subprocess.CompletedProcess:
    cmd = [os.path.join(BIN, "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", "--gloo", "--disable-cache",
           sys.executable] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout, cwd=REPO)


def last_json_line(output: str) -> dict:
    for line in reversed(output.splitlines()):
        start = line.find("{")
        if start >= 0 and line.rstrip().endswith("}"):
            try:
                return json.loads(line[start:])
            except ValueError:
                continue
    raise RuntimeError("no JSON result in the output:\n" + output[-3000:])
