"""TensorBoard as users open it: the real `tensorboard` server on a run's logs, read over its HTTP API.

The server listens on loopback only, on a port the test picks free; it is stopped at the end.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from workers.synthetic import datasets, mlp_model

from hvd_trainer.distributed import LocalStrategy
from hvd_trainer.trainer import Trainer

TENSORBOARD = os.path.join(os.path.dirname(sys.executable), "tensorboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, **params):
    url = f"http://127.0.0.1:{port}/data/plugin/scalars/{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture
def trained_logs(tmp_path):
    train, val, test = datasets(n_train=64, n_val=32, n_test=32)
    t = Trainer({"epochs": 3, "batch_size": 16, "early_stop": -1}, mlp_model(), distributed=LocalStrategy())
    t.train(train, val, test, save_path=str(tmp_path / "model"))
    return tmp_path / "model" / "logs", t.last_progress_tracker


@pytest.fixture
def server(trained_logs):
    if not os.path.exists(TENSORBOARD):
        pytest.skip("the tensorboard command is not installed; run 'make setup'")
    port = _free_port()
    proc = subprocess.Popen([TENSORBOARD, "--logdir", str(trained_logs[0]), "--host", "127.0.0.1", "--port", str(port),
                             "--reload_interval", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:
            try:
                tags = _get(port, "tags")
                if {"training", "validation", "test"} <= set(tags):
                    break
            except OSError:
                pass
            assert proc.poll() is None, "tensorboard exited"
            assert time.time() < deadline, "tensorboard did not serve the run's logs within 90 s"
            time.sleep(0.5)
        yield port, trained_logs[1]
    finally:
        proc.terminate()
        proc.wait(10)


def test_tensorboard_serves_the_seed_tags_every_evaluation_and_the_learning_rate(server):
    port, progress = server
    tags = _get(port, "tags")
    assert {"combined/step_training_loss", "y/step_training_loss", "combined/step_learning_rate",
            "y/epoch_accuracy", "combined/epoch_loss"} <= set(tags["training"])
    assert {"y/epoch_accuracy", "y/epoch_loss"} <= set(tags["validation"]) and "y/epoch_loss" in tags["test"]
    lr = _get(port, "scalars", run="training", tag="combined/step_learning_rate")
    assert [step for _, step, _ in lr] == list(range(1, progress.steps + 1)), "one learning rate per step"
    accuracy = _get(port, "scalars", run="validation", tag="y/epoch_accuracy")
    expected = progress.validation_metrics["y"]["accuracy"]
    assert [step for _, step, _ in accuracy] == [step for _, step, _ in expected], "every evaluation"
    assert [value for _, _, value in accuracy] == pytest.approx([value for _, _, value in expected], rel=1e-6)
