"""The command line under horovodrun -np 2: the example, train -> evaluate -> predict, resume, bad input."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import HOROVODRUN, REPO, launch_env, launcher_command, require_horovod, run_job

from hvd_trainer.examples import example_config_path, write_example_dataset


def hvd(np_, *args, launcher="gloo", cwd=None, timeout=300):
    require_horovod()
    return run_job(launcher_command(launcher, np_) + ["-m", "hvd_trainer", *args], timeout=timeout, cwd=cwd)


def local(*args, cwd=None):
    return run_job([sys.executable, "-m", "hvd_trainer", *args], timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory):
    return write_example_dataset("digits", str(tmp_path_factory.mktemp("data") / "digits.csv"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_csv):
    out = tmp_path_factory.mktemp("runs")
    r = hvd(2, "train", "--config", example_config_path("digits"), "--dataset", digits_csv, "--output-directory",
            str(out), "--experiment-name", "cli", "--model-name", "mlp", "--set", "trainer.epochs=4",
            "--set", "trainer.checkpoints_per_epoch=2")
    assert r.returncode == 0, r.stdout[-5000:]
    return out / "cli_mlp", r


def test_train_writes_ludwigs_layout(trained):
    run, _ = trained
    for name in ("description.json", "training_statistics.json", "model/model_hyperparameters.json",
                 "model/training_set_metadata.json", "model/model_weights", "model/training_progress.json",
                 "model/training_checkpoints/latest.ckpt", "model/training_checkpoints/best.ckpt"):
        assert (run / name).exists(), name
    for split in ("training", "validation", "test"):
        assert any(f.startswith("events.out.tfevents") for f in os.listdir(run / "model" / "logs" / split))
    stats = json.load(open(run / "training_statistics.json"))
    assert set(stats) == {"training", "validation", "test"} and "accuracy" in stats["test"]["label"]
    assert json.load(open(run / "description.json"))["world_size"] == 2


def test_rank_0_prints_one_line_per_evaluation_and_one_table_at_the_end(trained):
    run, r = trained
    evaluations = len(json.load(open(run / "training_statistics.json"))["validation"]["label"]["loss"])
    assert len(re.findall(r"\[0\]<stderr>:.*?step \d+/\d+ epoch \d+ \| train loss", r.stdout)) == evaluations == 8
    assert not re.search(r"\[1\]<std(err|out)>:.*step \d+/\d+ epoch", r.stdout), "rank 1 prints no evaluation"
    # The best checkpoint's table, once, by rank 0; `combined` would repeat the one output's loss.
    assert r.stdout.count("│ label") == r.stdout.count("[0]<stdout>:│ label") == 1
    assert "│ combined" not in r.stdout


def test_evaluate_on_the_test_split_matches_training(trained, digits_csv, tmp_path):
    run, _ = trained
    r = hvd(2, "evaluate", "--model-path", str(run), "--dataset", digits_csv, "--split", "test",
            "--output-directory", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:]
    metrics = json.load(open(tmp_path / "evaluation_statistics.json"))
    progress = json.load(open(run / "model" / "training_progress.json"))
    best_test = progress["best_eval_test_metrics"]["label"]
    assert metrics["label"]["accuracy"] == pytest.approx(best_test["accuracy"], abs=1e-9)
    assert metrics["label"]["loss"] == pytest.approx(best_test["loss"], rel=1e-5)


def test_predict_writes_every_row_in_input_order_with_probabilities(trained, digits_csv, tmp_path):
    run, _ = trained
    r = hvd(2, "predict", "--model-path", str(run / "model"), "--dataset", digits_csv, "--output-directory", str(tmp_path))
    assert r.returncode == 0, r.stdout[-4000:]
    rows = list(csv.DictReader(open(tmp_path / "predictions.csv")))
    truth = [row["label"] for row in csv.DictReader(open(digits_csv))]
    assert len(rows) == len(truth) == 1797
    assert {f"label_probabilities_{d}" for d in "0123456789"} <= set(rows[0])
    accuracy = sum(p["label_predictions"] == t for p, t in zip(rows, truth)) / len(truth)
    assert accuracy > 0.9  # in input order: a shuffled file would score ~0.1
    for row in rows[:20]:
        probs = [float(v) for k, v in row.items() if k.startswith("label_probabilities_")]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)


def test_resume_continues_in_place_with_more_epochs(trained, digits_csv):
    run, _ = trained
    before = json.load(open(run / "model" / "training_progress.json"))["steps"]
    r = hvd(2, "train", "--resume", str(run), "--dataset", digits_csv, "--set", "trainer.epochs=5")
    assert r.returncode == 0, r.stdout[-4000:]
    progress = json.load(open(run / "model" / "training_progress.json"))
    assert progress["epoch"] == 5 and progress["steps"] == before * 5 // 4
    assert not (run.parent / "cli_mlp_1").exists()


def test_resume_refuses_a_config_that_changes_the_model(trained, digits_csv, tmp_path):
    run, _ = trained
    import yaml

    config = yaml.safe_load(open(example_config_path("digits")))
    config["combiner"]["output_size"] = 64
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config))
    r = local("train", "--resume", str(run), "--config", str(path), "--dataset", digits_csv)
    assert r.returncode == 2 and "describes another model" in r.stdout and "Traceback" not in r.stdout
    r = local("train", "--resume", str(run), "--dataset", digits_csv, "--set", "combiner.output_size=8")
    assert r.returncode == 2 and "only trainer.* and distributed.*" in r.stdout


def test_visualize_draws_the_learning_curves(trained, tmp_path):
    run, _ = trained
    r = local("visualize", "--training-statistics", str(run / "training_statistics.json"), "--output", str(tmp_path / "c.png"))
    assert r.returncode == 0, r.stdout
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The built-in example (no subcommand) on 2 ranks, its accuracy and its console: tests/test_demo.py runs it
# exactly as `make demo` does.


# Each rank runs in a mount namespace of its own (unshare --mount), and ranks other than 0 mount
# an empty tmpfs over $HVD_PRIVATE_PATH there: on one machine, rank 1 sees another disk than rank 0
# at the output path, as on hosts without a shared file system (test_multihost.py has the real one).
_OTHER_RANKS_SEE_AN_EMPTY_DISK = (
    'rank="${HOROVOD_RANK:-${OMPI_COMM_WORLD_RANK:-0}}"; '
    'if [ "$rank" != 0 ]; then mount -t tmpfs -o size=1m hvd-other-rank "$HVD_PRIVATE_PATH" || exit 97; fi; '
    'exec "$@"'
)


def hvd_rank_1_sees_nothing(private_path, *args, timeout=300):
    """`hvd_trainer ARGS` at 2 ranks (Gloo), rank 1 seeing an empty directory at private_path."""
    require_horovod()
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("giving rank 1 a disk of its own needs root and unshare (util-linux)")
    cmd = [HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", "--disable-cache",
           "unshare", "--mount", "--propagation", "private", "sh", "-c", _OTHER_RANKS_SEE_AN_EMPTY_DISK, "sh",
           sys.executable, "-m", "hvd_trainer", *args]
    return run_job(cmd, timeout=timeout, env={"HVD_PRIVATE_PATH": str(private_path)})


@pytest.fixture
def private_run(trained, tmp_path):
    """A copy of the trained run under tmp_path/private, a directory rank 1 will see empty."""
    run, _ = trained
    copy = tmp_path / "private" / run.name
    shutil.copytree(run, copy)
    return copy


def test_resume_evaluate_and_predict_when_only_rank_0_has_the_run_directory(private_run, digits_csv):
    private = private_run.parent
    before = json.load(open(private_run / "model" / "training_progress.json"))["steps"]
    r = hvd_rank_1_sees_nothing(private, "train", "--resume", str(private_run), "--config",
                                example_config_path("digits"), "--dataset", digits_csv, "--set", "trainer.epochs=5")
    assert r.returncode == 0, r.stdout[-4000:]
    assert f"Resuming from step {before}" in r.stdout
    assert json.load(open(private_run / "model" / "training_progress.json"))["epoch"] == 5

    r = hvd_rank_1_sees_nothing(private, "evaluate", "--model-path", str(private_run), "--dataset", digits_csv,
                                "--split", "validation")
    assert r.returncode == 0, r.stdout[-4000:]
    header = next(line for line in r.stdout.splitlines() if "│ label" in line)
    assert "validation" in header and "test" not in header, "the table is labelled with the split evaluated"
    r = hvd_rank_1_sees_nothing(private, "predict", "--model-path", str(private_run), "--dataset", digits_csv,
                                "--output-directory", str(private / "predictions"))
    assert r.returncode == 0, r.stdout[-4000:]
    assert len(open(private / "predictions" / "predictions.csv").read().splitlines()) == 1798


def test_weights_that_do_not_fit_end_every_rank_with_one_error_and_exit_code_2(private_run, digits_csv):
    import torch

    torch.save(torch.nn.Linear(3, 2).state_dict(), str(private_run / "model" / "model_weights"))
    r = hvd_rank_1_sees_nothing(private_run.parent, "evaluate", "--model-path", str(private_run),
                                "--dataset", digits_csv, timeout=120)
    # horovodrun --gloo turns any rank's exit status into 1; it names the first one it saw.
    assert r.returncode != 0 and "Exit code: 2" in r.stdout, r.stdout[-4000:]
    assert "[0]<stderr>:hvd_trainer: error: The model weights" in r.stdout, r.stdout[-4000:]
    assert "[1]<stderr>:hvd_trainer: error: The model weights" in r.stdout, r.stdout[-4000:]
    assert "do not fit the model" in r.stdout and "]<stderr>:Traceback" not in r.stdout  # horovodrun has its own

def test_tune_batch_size_reads_a_config_that_only_rank_0_has(tmp_path, digits_csv):
    import yaml

    private = tmp_path / "private"
    private.mkdir()
    config = yaml.safe_load(open(example_config_path("digits")))
    config["trainer"].update(batch_size="auto", max_batch_size=128)
    (private / "config.yaml").write_text(yaml.safe_dump(config))
    r = hvd_rank_1_sees_nothing(private, "tune-batch-size", "--config", str(private / "config.yaml"),
                                "--dataset", digits_csv, timeout=240)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "Best batch size per rank:" in r.stdout and "over 2 rank(s)" in r.stdout, r.stdout[-4000:]


BAD = [
    (["train"], "needs --config"),
    (["train", "--config", "/nonexistent.yaml", "--dataset", "x.csv"], "does not exist"),
    (["train", "--config", "{bad}", "--dataset", "{data}"], "not valid YAML"),
    (["train", "--config", "{typo}", "--dataset", "{data}"], "Did you mean 'epochs'"),
    (["train", "--config", "{good}", "--dataset", "/nonexistent.csv"], "/nonexistent.csv"),
    (["train", "--config", "{good}", "--dataset", "{data}", "--set", "trainer.batch_size=0"], "trainer.batch_size"),
    (["train", "--config", "{good}", "--dataset", "{data}", "--set", "trainer.epochs"], "not an assignment"),
    (["evaluate", "--model-path", "/nonexistent", "--dataset", "{data}"], "is not a trained model"),
    (["visualize", "--training-statistics", "/nonexistent.json"], "does not exist"),
]


@pytest.mark.parametrize("args,fragment", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_gets_one_clear_line_and_exit_code_2(args, fragment, tmp_path, digits_csv):
    (tmp_path / "bad.yaml").write_text("trainer: [unclosed\n")
    (tmp_path / "typo.yaml").write_text(open(example_config_path("digits")).read().replace("epochs:", "epoch:"))
    subs = {"{bad}": str(tmp_path / "bad.yaml"), "{typo}": str(tmp_path / "typo.yaml"),
            "{good}": example_config_path("digits"), "{data}": digits_csv}
    r = local(*[subs.get(a, a) for a in args])
    assert r.returncode == 2, r.stdout[-3000:]
    assert "hvd_trainer: error:" in r.stdout and fragment in r.stdout, r.stdout[-3000:]
    assert "Traceback" not in r.stdout


def test_a_bad_input_at_two_ranks_fails_fast_on_both(tmp_path, digits_csv):
    r = hvd(2, "train", "--config", example_config_path("digits"), "--dataset", digits_csv,
            "--set", "input_features=[{name: no_such_column, type: number}]", timeout=120)
    assert r.returncode != 0
    assert r.stdout.count("no_such_column") >= 2
    assert "]<stderr>:Traceback" not in r.stdout  # horovodrun's own traceback is not ours


def test_help_does_not_need_horovod():
    code = ("import sys; from hvd_trainer.cli import build_parser; build_parser().format_help(); "
            "assert 'horovod' not in sys.modules, 'horovod imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=launch_env())
