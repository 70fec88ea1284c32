"""MLflow logging (trainer.mlflow / train --mlflow-tracking-uri): under horovodrun -np 2, rank 0 alone
logs one run to a local file store, read back here with MLflow's own client."""
import csv
import json
import os
import random
import sys

import pytest
import yaml

from conftest import launcher_command, require_horovod, run_job

from hvd_trainer.mlflow_callback import flatten, metric_key

CONFIG = {
    "input_features": [{"name": "x1", "type": "number"}, {"name": "x2", "type": "number"}],
    "output_features": [{"name": "label", "type": "category"}],
    "combiner": {"type": "concat", "num_fc_layers": 1, "output_size": 8},
    "trainer": {"epochs": 2, "batch_size": 16, "checkpoints_per_epoch": 2, "learning_rate": 0.01},
}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    work = tmp_path_factory.mktemp("mlflow")
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    rng = random.Random(0)
    with open(work / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "label"])
        for _ in range(160):
            a, b = rng.gauss(0, 1), rng.gauss(0, 1)
            w.writerow([f"{a:.4f}", f"{b:.4f}", "up" if a + b > 0 else "down"])
    return work


def client_for(store):
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"file:{store}")


def train(job, *args, launcher="gloo", np_=2):
    if launcher != "local":
        require_horovod()
    return run_job(launcher_command(launcher, np_) + [
        "-m", "hvd_trainer", "train", "--config", str(job / "config.yaml"), "--dataset", str(job / "data.csv"),
        "--output-directory", str(job / "runs"), *args], timeout=300)


def test_rank_0_logs_params_every_evaluation_and_the_model_to_a_file_store(job):
    store = job / "mlruns"
    r = train(job, "--model-name", "np2", "--mlflow-tracking-uri", f"file:{store}")
    assert r.returncode == 0, r.stdout[-4000:]
    client = client_for(store)
    experiment = client.get_experiment_by_name("hvd_trainer")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, "one MLflow run for a 2-rank job: only rank 0 logs"
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "experiment_np2"

    assert run.data.params["trainer.learning_rate"] == "0.01"
    assert run.data.params["trainer.optimizer.type"] == "adam"
    assert run.data.params["input_features.1.name"] == "x2"
    assert run.data.params["trainer.mlflow.tracking_uri"] == f"file:{store}"

    stats = json.load(open(job / "runs" / "experiment_np2" / "training_statistics.json"))
    for split in ("training", "validation", "test"):
        expected = [(step, value) for _, step, value in stats[split]["label"]["loss"]]
        history = client.get_metric_history(run.info.run_id, metric_key(split, "label", "loss"))
        assert [m.step for m in history] == [step for step, _ in expected], split
        assert [m.value for m in history] == pytest.approx([value for _, value in expected]), split
    assert len(expected) == 4  # 2 epochs x 2 evaluations each, one point per evaluation
    assert len(client.get_metric_history(run.info.run_id, "learning_rate")) == 4

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model_weights", "model/model_hyperparameters.json", "model/training_set_metadata.json"} <= artifacts
    assert "model/training_checkpoints" not in artifacts


def test_a_resumed_run_continues_the_same_mlflow_run(job):
    store = job / "mlruns_resume"
    r = train(job, "--model-name", "resumed", "--mlflow-tracking-uri", f"file:{store}", launcher="local")
    assert r.returncode == 0, r.stdout[-4000:]
    r = run_job([sys.executable, "-m", "hvd_trainer", "train", "--resume", str(job / "runs" / "experiment_resumed"),
                 "--dataset", str(job / "data.csv"), "--set", "trainer.epochs=3"], timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    client = client_for(store)
    runs = client.search_runs([client.get_experiment_by_name("hvd_trainer").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "validation.label.loss")
    stats = json.load(open(job / "runs" / "experiment_resumed" / "training_statistics.json"))
    # The resumed run's statistics hold both parts; MLflow got the same points, into the one run.
    assert [m.step for m in history] == [step for _, step, _ in stats["validation"]["label"]["loss"]]
    assert max(epoch for epoch, _, _ in stats["validation"]["label"]["loss"]) == 3
    assert runs[0].data.params["trainer.epochs"] == "2"  # MLflow params keep their first value


def test_without_mlflow_installed_training_refuses_to_start(job, tmp_path):
    r = run_job([sys.executable, "-c", "import sys; sys.modules['mlflow'] = None; "
                 "from hvd_trainer.cli import main; sys.exit(main(sys.argv[1:]))",
                 "train", "--config", str(job / "config.yaml"), "--dataset", str(job / "data.csv"),
                 "--output-directory", str(tmp_path), "--mlflow-tracking-uri", f"file:{tmp_path / 'mlruns'}"])
    assert r.returncode == 2, r.stdout[-3000:]
    assert "pip install 'hvd_trainer[mlflow]'" in r.stdout and "Traceback" not in r.stdout
    assert not list(tmp_path.glob("*/model/model_weights"))


def test_the_config_is_flattened_into_dotted_params():
    assert flatten({"trainer": {"optimizer": {"type": "adam"}}, "input_features": [{"name": "a"}]}) == {
        "trainer.optimizer.type": "adam", "input_features.0.name": "a"}
    assert metric_key("validation", "price (usd)", "loss") == "validation.price _usd_.loss"
