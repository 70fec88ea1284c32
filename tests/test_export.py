"""`export`: a trained model as TorchScript or ONNX whose outputs equal predict's on the same rows.

A small model with every input type (number, category, binary, each with missing values) and
every output type is trained by the real CLI; predict writes predictions.csv for rows that hold
missing and never-seen values; the exported file, fed those rows through its signature alone,
must give the same labels and the same numbers (1e-5).
"""
import csv
import json
import math
import random
import sys

import numpy as np
import pytest
import yaml

from conftest import run_job

from hvd_trainer.export.formats import load_runner
from hvd_trainer.export.signature import decode_labels, encode_rows

CONFIG = {
    "input_features": [
        {"name": "size", "type": "number"},
        {"name": "weight", "type": "number", "preprocessing": {"normalization": "minmax",
                                                               "missing_value_strategy": "fill_with_mean"}},
        {"name": "color", "type": "category", "preprocessing": {"lowercase": True}},
        {"name": "shape", "type": "category", "encoder": {"type": "onehot"}},
        {"name": "member", "type": "binary"},
    ],
    "output_features": [
        {"name": "kind", "type": "category"},
        {"name": "price", "type": "number", "preprocessing": {"normalization": "zscore"}},
        {"name": "sold", "type": "binary"},
    ],
    "combiner": {"type": "concat", "num_fc_layers": 1, "output_size": 16},
    "trainer": {"epochs": 2, "batch_size": 32, "learning_rate": 0.01},
}
COLORS, SHAPES = ["red", "Green", "blue"], ["round", "square"]


def write_rows(path, n, seed, unseen=False):
    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["size", "weight", "color", "shape", "member", "kind", "price", "sold"])
        for i in range(n):
            size, weight = rng.uniform(0, 10), rng.uniform(50, 150)
            color = rng.choice(COLORS + (["purple"] if unseen else []))
            member = rng.choice(["yes", "no"])
            row = [f"{size:.3f}", f"{weight:.2f}", color, rng.choice(SHAPES), member,
                   "big" if size > 5 else "small", f"{100 + 20 * size + rng.gauss(0, 3):.2f}",
                   "true" if member == "yes" and size > 3 else "false"]
            for column in (0, 1, 2, 3, 4):  # every input goes missing now and then
                if rng.random() < 0.08:
                    row[column] = ""
            w.writerow(row)
    return str(path)


def hvd_trainer(*args):
    return run_job([sys.executable, "-m", "hvd_trainer", *args], timeout=180)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("export")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    data = write_rows(work / "train.csv", 240, seed=1)
    r = hvd_trainer("train", "--config", str(config), "--dataset", data, "--output-directory", str(work / "runs"),
                    "--experiment-name", "exp", "--model-name", "small")
    assert r.returncode == 0, r.stdout[-4000:]
    rows = write_rows(work / "new.csv", 57, seed=2, unseen=True)
    r = hvd_trainer("predict", "--model-path", str(work / "runs" / "exp_small"), "--dataset", rows,
                    "--output-directory", str(work / "predicted"))
    assert r.returncode == 0, r.stdout[-4000:]
    return work, work / "runs" / "exp_small", rows, list(csv.DictReader(open(work / "predicted" / "predictions.csv")))


def as_float(text):
    return {"True": 1.0, "False": 0.0}.get(text, float(text) if text else math.nan)


@pytest.mark.parametrize("export_format", ["torchscript", "onnx"])
def test_the_exported_model_gives_predicts_outputs_on_the_same_rows(trained, export_format):
    work, run, rows_csv, predicted = trained
    output = work / f"out_{export_format}" / ("m.pt" if export_format == "torchscript" else "m.onnx")
    r = hvd_trainer("export", "--model-path", str(run), "--format", export_format, "--output", str(output))
    assert r.returncode == 0, r.stdout[-4000:]
    signature = json.load(open(f"{output}.signature.json"))
    assert [i["name"] for i in signature["inputs"]] == ["size", "weight", "color", "shape", "member"]

    columns = {}
    for row in csv.DictReader(open(rows_csv)):
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    inputs = encode_rows(signature, columns)
    assert (inputs["color"] == -1).any() and np.isnan(inputs["size"]).any()  # missing values reach the model
    outputs = load_runner(export_format, str(output))(inputs)  # the file itself: torch.jit.load or onnxruntime

    labels = decode_labels(signature, outputs)
    for name in ("kind_predictions", "sold_predictions"):
        assert labels[name] == [p[name] for p in predicted], name
    np.testing.assert_allclose(outputs["price_predictions"], [as_float(p["price_predictions"]) for p in predicted],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs["sold_probabilities"], [as_float(p["sold_probability"]) for p in predicted],
                               rtol=1e-5, atol=1e-5)
    kinds = signature["outputs"][[o["name"] for o in signature["outputs"]].index("kind_probabilities")]["labels"]
    for i, label in enumerate(kinds):
        np.testing.assert_allclose(outputs["kind_probabilities"][:, i],
                                   [as_float(p[f"kind_probabilities_{label}"]) for p in predicted],
                                   rtol=1e-5, atol=1e-5)


def test_exporting_a_directory_that_is_not_a_trained_model_says_so(tmp_path):
    r = hvd_trainer("export", "--model-path", str(tmp_path), "--format", "torchscript")
    assert r.returncode == 2 and "is not a trained model" in r.stdout and "Traceback" not in r.stdout


def test_an_unknown_format_is_refused_with_the_known_ones(tmp_path):
    r = hvd_trainer("export", "--model-path", str(tmp_path), "--format", "tflite")
    assert r.returncode == 2 and "invalid choice: 'tflite'" in r.stdout and "torchscript" in r.stdout


def test_onnx_without_onnxruntime_is_refused_before_any_work(trained, tmp_path):
    _, run, _, _ = trained
    # sys.modules[name] = None is how Python marks a module as not importable: find_spec returns None.
    r = run_job([sys.executable, "-c", "import sys; sys.modules['onnxruntime'] = None; "
                 "from hvd_trainer.cli import main; sys.exit(main(sys.argv[1:]))",
                 "export", "--model-path", str(run), "--format", "onnx", "--output", str(tmp_path / "m.onnx")])
    assert r.returncode == 2, r.stdout[-3000:]
    assert "onnxruntime" in r.stdout and "pip install" in r.stdout and not (tmp_path / "m.onnx").exists()


def test_export_under_a_launcher_is_refused_on_every_rank(trained):
    from conftest import launcher_command, require_horovod

    require_horovod()
    _, run, _, _ = trained
    r = run_job(launcher_command("gloo", 2) + ["-m", "hvd_trainer", "export", "--model-path", str(run),
                                               "--format", "torchscript"], timeout=120)
    assert r.returncode != 0 and r.stdout.count("export writes one file from one process") == 2, r.stdout[-3000:]
