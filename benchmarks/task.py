"""The benchmark tasks, written once and read by every contender.

Each task is a set of Parquet files (training / validation / test) and a DIR/<task>.task.json
that says how to train on them (several tasks may share DIR's files):

- table:  sklearn's make_classification, 200,000 rows x 64 features, 10 classes (seed 0), split
          80/10/10; MLP 64-128-128-10 (ReLU), Adam 0.001, batch 128, 10 epochs.
- wide:   the same files, MLP 64-1024-1024-10 (1.1M parameters), 2 epochs.
- memory: the same table with 1,000,000 rows in files of 16 row groups; 50 training steps.
- memory_footprint: the same on 2,000 rows: the memory a rank needs before any rows.
- digits: the digits example (hvd_trainer.examples), 1,797 rows, split 70/10/20; the example's
          model (64-256-256-10, ReLU, dropout 0.1), Adam 0.002, batch 64, 40 epochs.

The files hold the raw feature values: every contender z-scores them itself with the training
split's mean and standard deviation, as hvd_trainer's `normalization: zscore` does, so reading
and preprocessing are part of every contender's wall time.

This module is imported by the contenders, including the Lightning one that runs in another
virtualenv, so it needs only numpy, pyarrow and torch (and sklearn/yaml to write the data).
"""
from __future__ import annotations

import atexit
import json
import os
import resource
import sys
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

#: Printed by rank 0 of every contender: its measurements, as one JSON object.
RESULT_MARK = "BENCH_RESULT "
#: Printed by every rank at exit: its rank and peak RSS.
RANK_MARK = "BENCH_RANK "

TABLE = dict(name="table", n_features=64, n_classes=10, hidden=128, num_layers=2, dropout=0.0,
             batch_size=128, learning_rate=0.001, epochs=10, split=(0.8, 0.1, 0.1))
#: The table with a compute-heavier MLP (64-1024-1024-10, 1.1M parameters), where a step is long
#: enough for a second process to pay: the scaling table's second model.
WIDE = dict(TABLE, name="wide", hidden=1024, epochs=2)
#: Peak memory of hvd_trainer's CLI on a 1M-row table (16 row groups per file, so that each rank of
#: np=2 reads only its own): a few training steps, since only the memory is measured.
MEMORY = dict(TABLE, name="memory", epochs=1, train_steps=50)
MEMORY_ROWS, MEMORY_ROW_GROUPS = 1_000_000, 16
#: The same CLI and config on 2,000 rows (0.5 MB): the memory a rank needs before any rows (torch,
#: pyarrow, Horovod, the optimizer, an evaluation), against which the memory task's net figures are taken.
MEMORY_FOOTPRINT = dict(MEMORY, name="memory_footprint")
FOOTPRINT_ROWS, FOOTPRINT_ROW_GROUPS = 2_000, 2
DIGITS = dict(name="digits", n_features=64, n_classes=10, hidden=256, num_layers=2, dropout=0.1,
              batch_size=64, learning_rate=0.002, epochs=40, split=(0.7, 0.1, 0.2))
SEED = 0
#: Evaluation batch size of every contender (hvd_trainer's default: the training batch size).
EVAL_BATCH = None


# ---- writing the tasks --------------------------------------------------------------------
SPLITS = ("training", "validation", "test")


def _write_parquet(path: str, x: np.ndarray, y: np.ndarray, names, row_groups: Optional[int] = None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({**{n: x[:, i] for i, n in enumerate(names)}, "label": y.astype(np.int64)})
    tmp = f"{path}.{os.getpid()}.tmp"
    # pyarrow's default (one row group up to 1Mi rows) leaves nothing for ranks to split by.
    pq.write_table(table, tmp, row_group_size=-(-len(y) // row_groups) if row_groups else None)
    os.replace(tmp, path)


def _split_and_write(directory: str, x: np.ndarray, y: np.ndarray, names, spec: Dict[str, Any],
                     row_groups: Optional[int] = None) -> Dict[str, Any]:
    os.makedirs(directory, exist_ok=True)
    order = np.random.default_rng(SEED).permutation(len(y))
    n_train = int(round(spec["split"][0] * len(y)))
    n_val = int(round(spec["split"][1] * len(y)))
    parts = {"training": order[:n_train], "validation": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    for split, idx in parts.items():
        _write_parquet(os.path.join(directory, f"{split}.parquet"), x[np.sort(idx)], y[np.sort(idx)], names,
                       row_groups)
    return _rewrite_task(directory, spec, names)


def write_hvd_config(directory: str, task: Dict[str, Any]) -> str:
    """hvd_trainer's YAML for the task: the same MLP, optimizer and schedule as the bare loops.

    digits starts from the example's own config (example_config_path('digits')); the table gets
    64 number inputs (zscore), a category output and a concat combiner. In both, the trainer
    section is the task's: learning_rate_scaling stays linear (hvd_trainer's default and
    Horovod's convention: every contender multiplies the LR by the number of processes), early
    stopping is off, and gradient clipping is switched off, because no other contender clips.
    """
    import yaml

    if task["name"] == "digits":
        from hvd_trainer.examples import example_config_path

        with open(example_config_path("digits")) as fh:
            config = yaml.safe_load(fh)
    else:
        config = {
            "input_features": [{"name": n, "type": "number", "preprocessing": {"normalization": "zscore"}}
                               for n in task["features"]],
            "output_features": [{"name": task["label"], "type": "category"}],
            "combiner": {"type": "concat", "num_fc_layers": task["num_layers"], "output_size": task["hidden"],
                         "activation": "relu", "dropout": task["dropout"]},
            "distributed": {"strategy": "auto"},
        }
    combiner = config["combiner"]
    assert (combiner["num_fc_layers"], combiner["output_size"], combiner.get("dropout", 0)) == \
        (task["num_layers"], task["hidden"], task["dropout"]), f"the {task['name']} config's model is not the task's"
    config["trainer"] = {"epochs": task["epochs"], "batch_size": task["batch_size"],
                         "learning_rate": task["learning_rate"], "early_stop": -1, "learning_rate_scaling": "linear",
                         "gradient_clipping": {"clipglobalnorm": None}, "optimizer": {"type": "adam"}}
    if task.get("train_steps"):
        config["trainer"]["train_steps"] = task["train_steps"]
    path = os.path.join(directory, f"{task['name']}.hvd_trainer.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return path


def prepare_table(cache_dir: str, rows: int, epochs: int, spec: Optional[Dict[str, Any]] = None,
                  row_groups: Optional[int] = None) -> Dict[str, Any]:
    """The synthetic table (written once per row count and row groups) and a task on it (TABLE,
    WIDE or MEMORY, whose task.json and config are rewritten for `epochs`)."""
    directory = os.path.join(cache_dir, f"table_{rows}_seed{SEED}" + (f"_rg{row_groups}" if row_groups else ""))
    spec = {**(spec or TABLE), "epochs": epochs}
    if not all(os.path.exists(os.path.join(directory, f"{s}.parquet")) for s in SPLITS):
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=rows, n_features=64, n_informative=32, n_redundant=16,
                                   n_classes=10, random_state=SEED)
        return _split_and_write(directory, x.astype(np.float32), y, [f"x{i}" for i in range(64)], spec, row_groups)
    return _rewrite_task(directory, spec, [f"x{i}" for i in range(64)])


def prepare_digits(cache_dir: str, epochs: int) -> Dict[str, Any]:
    """The digits example's data (hvd_trainer.examples), split into three files."""
    directory = os.path.join(cache_dir, f"digits_seed{SEED}")
    spec = {**DIGITS, "epochs": epochs}
    names = [f"pixel_{i}" for i in range(64)]
    if not os.path.exists(os.path.join(directory, "test.parquet")):
        import pyarrow.parquet as pq

        from hvd_trainer.examples import write_example_dataset

        os.makedirs(directory, exist_ok=True)
        whole = write_example_dataset("digits", os.path.join(directory, "digits.parquet"))
        table = pq.read_table(whole)
        x = np.stack([table.column(n).to_numpy() for n in names], axis=1).astype(np.float32)
        return _split_and_write(directory, x, table.column("label").to_numpy(), names, spec)
    return _rewrite_task(directory, spec, names)


def _rewrite_task(directory: str, spec: Dict[str, Any], names) -> Dict[str, Any]:
    """DIR/<name>.task.json (read by every contender) and DIR/<name>.hvd_trainer.yaml for a task on DIR's files."""
    import pyarrow.parquet as pq

    paths = {s: os.path.join(directory, f"{s}.parquet") for s in SPLITS}
    task = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()}
    task.update(paths=paths, features=list(names), label="label", seed=SEED,
                rows={s: pq.ParquetFile(p).metadata.num_rows for s, p in paths.items()},
                row_groups={s: pq.ParquetFile(p).metadata.num_row_groups for s, p in paths.items()},
                eval_batch_size=EVAL_BATCH or spec["batch_size"],
                task_json=os.path.join(directory, f"{spec['name']}.task.json"))
    task["config"] = write_hvd_config(directory, task)
    with open(task["task_json"], "w") as fh:
        json.dump(task, fh, indent=2)
    return task


def load_task(path: str) -> Dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


# ---- what every contender does alike ------------------------------------------------------
def read_split(task: Dict[str, Any], split: str, rank: int = 0, size: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """(features float32 [N, F], labels int64 [N]) of one split, read from its Parquet file."""
    import pyarrow.parquet as pq

    table = pq.read_table(task["paths"][split])
    x = np.stack([table.column(n).to_numpy() for n in task["features"]], axis=1).astype(np.float32)
    return x, table.column(task["label"]).to_numpy().astype(np.int64)


def load_arrays(task: Dict[str, Any]):
    """{split: (x, y)} with x z-scored by the training split's mean and std (0 std -> 1)."""
    data = {s: read_split(task, s) for s in ("training", "validation", "test")}
    x_train = data["training"][0].astype(np.float64)
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    return {s: (((x - mean) / std).astype(np.float32), y) for s, (x, y) in data.items()}


def build_mlp(task: Dict[str, Any]):
    """n_features -> hidden (ReLU, dropout) x num_layers -> n_classes, initialised from the task's seed."""
    import torch

    torch.manual_seed(task["seed"])
    layers, size = [], task["n_features"]
    for _ in range(task["num_layers"]):
        layers += [torch.nn.Linear(size, task["hidden"]), torch.nn.ReLU()]
        if task["dropout"]:
            layers.append(torch.nn.Dropout(task["dropout"]))
        size = task["hidden"]
    layers.append(torch.nn.Linear(size, task["n_classes"]))
    return torch.nn.Sequential(*layers)


def count_correct(model, x, y, batch_size: int) -> Tuple[float, float, int]:
    """(correct predictions, summed cross-entropy, rows) of `model` on tensors x, y."""
    import torch

    model.eval()
    correct, loss, n = 0.0, 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size])
            target = y[i:i + batch_size]
            correct += float((logits.argmax(-1) == target).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            n += len(target)
    model.train()
    return correct, loss, n


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, size: int = 1) -> np.ndarray:
    """This rank's sample order for one epoch: a permutation, padded to a multiple of size, dealt round-robin."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    total = -(-n // size) * size
    return np.resize(order, total)[rank::size]


# ---- reporting --------------------------------------------------------------------------------
def emit_result(result: Dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


def peak_rss_kb() -> int:
    """This process's peak RSS: /proc/self/status's VmHWM, the high-water mark of its own memory.

    Not getrusage's ru_maxrss: Linux keeps that across exec, so a process started by a large parent
    (the bench harness after building the 1M-row table: 1.7 GB) reports the parent's peak as its own."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def report_rss_at_exit(rank_fn) -> None:
    """Every rank prints its peak RSS (VmHWM) when it exits."""

    def report():
        try:
            rank = rank_fn()
        except Exception:  # noqa: BLE001 - reporting must never mask the process's own exit
            rank = None
        peak_kb = peak_rss_kb()
        sys.stdout.write(RANK_MARK + json.dumps({"rank": rank, "pid": os.getpid(), "peak_rss_mb": peak_kb / 1024})
                         + "\n")
        sys.stdout.flush()

    atexit.register(report)


def env_rank() -> Optional[int]:
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK", "LOCAL_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def now() -> float:
    return time.time()
