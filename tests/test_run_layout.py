"""RunLayout: every path of a run directory (SPEC section 6), and finding or making one."""
import os

import pytest

from hvd_trainer.run_layout import RunLayout

SPEC_PATHS = {
    "description": "description.json",
    "training_statistics": "training_statistics.json",
    "evaluation_statistics": "evaluation_statistics.json",
    "learning_curves": "learning_curves.png",
    "requeue_marker": "requeue_requested",
    "model_dir": "model",
    "hyperparameters": "model/model_hyperparameters.json",
    "metadata": "model/training_set_metadata.json",
    "weights": "model/model_weights",
    "progress": "model/training_progress.json",
    "checkpoints_dir": "model/training_checkpoints",
    "latest_checkpoint": "model/training_checkpoints/latest.ckpt",
    "best_checkpoint": "model/training_checkpoints/best.ckpt",
    "logs_dir": "model/logs",
}


@pytest.mark.parametrize("name,relative", sorted(SPEC_PATHS.items()))
def test_every_path_has_ludwigs_name_under_the_root(name, relative):
    layout = RunLayout(os.path.join("results", "exp_run"))
    assert getattr(layout, name) == os.path.join("results", "exp_run", relative)


def test_each_split_logs_under_logs():
    layout = RunLayout("r")
    assert [layout.log_dir(s) for s in ("training", "validation", "test")] == [
        os.path.join("r", "model", "logs", s) for s in ("training", "validation", "test")]


def test_the_root_is_kept_exactly_as_given():
    assert RunLayout("results/x/").root == "results/x/"


def test_of_model_dir_is_the_layout_whose_model_dir_it_is():
    assert RunLayout.of_model_dir("results/x/model").root == "results/x"
    assert RunLayout.of_model_dir("results/x/model/").model_dir == os.path.join("results", "x", "model")
    assert RunLayout.of_model_dir("model").model_dir == "model"  # the Trainer's default save_path


def test_of_path_accepts_a_run_directory_or_its_model_directory(tmp_path):
    run = tmp_path / "exp_run"
    (run / "model").mkdir(parents=True)
    assert RunLayout.of_path(str(run)).root == str(run)
    # A model/ directory without saved hyperparameters is taken as a run directory of its own.
    assert RunLayout.of_path(str(run / "model")).root == str(run / "model")
    (run / "model" / "model_hyperparameters.json").write_text("{}")
    assert RunLayout.of_path(str(run / "model") + "/").root == str(run)


def test_new_takes_the_next_free_suffix_and_creates_it(tmp_path):
    first = RunLayout.new(str(tmp_path), "exp", "mlp")
    second = RunLayout.new(str(tmp_path), "exp", "mlp")
    third = RunLayout.new(str(tmp_path), "exp", "mlp")
    assert [first.root, second.root, third.root] == [str(tmp_path / n) for n in ("exp_mlp", "exp_mlp_1", "exp_mlp_2")]
    assert all(os.path.isdir(layout.root) for layout in (first, second, third))
