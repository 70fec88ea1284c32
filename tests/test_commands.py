"""What train, evaluate and predict read on rank 0 before any rank acts (one process; see
test_cli.py for the same under horovodrun -np 2 with rank 1 seeing another directory)."""
import json

import pytest
import torch
import yaml

from hvd_trainer.commands.train import plan_run
from hvd_trainer.commands.trained_model import load_saved_weights, read_saved_run
from hvd_trainer.data.preprocessing import INFO_KEY, METADATA_FORMAT_VERSION
from hvd_trainer.errors import CheckpointError, ConfigError, DataError
from hvd_trainer.examples import example_config_path
from hvd_trainer.options import TrainOptions
from hvd_trainer.run_layout import RunLayout


@pytest.fixture
def saved_run(tmp_path):
    """A run directory with a saved config and metadata (no weights)."""
    layout = RunLayout(str(tmp_path / "exp_run"))
    (tmp_path / "exp_run" / "model").mkdir(parents=True)
    with open(layout.hyperparameters, "w") as fh:
        json.dump(yaml.safe_load(open(example_config_path("digits"))), fh)
    with open(layout.metadata, "w") as fh:
        json.dump({INFO_KEY: {"format_version": METADATA_FORMAT_VERSION, "training_rows": 10}}, fh)
    return layout


def test_a_resume_plan_carries_the_saved_config_and_metadata(saved_run):
    plan = plan_run(TrainOptions(resume=saved_run.root, overrides=("trainer.epochs=9",)))
    assert plan.choice.resuming and plan.choice.directory == saved_run.root
    assert plan.job.trainer.epochs == 9
    assert plan.saved_metadata[INFO_KEY]["training_rows"] == 10


def test_a_resume_directory_without_a_run_plans_a_new_run_there(tmp_path):
    plan = plan_run(TrainOptions(resume=str(tmp_path / "not_yet"), config=example_config_path("digits")))
    assert not plan.choice.resuming and plan.choice.directory == str(tmp_path / "not_yet")
    assert plan.saved_metadata is None


def test_a_resumed_run_with_damaged_metadata_is_a_data_error(saved_run):
    with open(saved_run.metadata, "w") as fh:
        fh.write("{not json")
    with pytest.raises(DataError, match="damaged"):
        plan_run(TrainOptions(resume=saved_run.root))


def test_a_saved_run_is_read_from_the_run_or_its_model_directory(saved_run):
    for path in (saved_run.root, saved_run.model_dir):
        saved = read_saved_run(path)
        assert saved.layout == saved_run and saved.metadata[INFO_KEY]["training_rows"] == 10
    with pytest.raises(ConfigError, match="is not a trained model"):
        read_saved_run(saved_run.root + "_missing")


def test_weights_that_do_not_fit_the_model_are_a_checkpoint_error(tmp_path):
    path = str(tmp_path / "model_weights")
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    load_saved_weights(torch.nn.Linear(3, 2), path)
    with pytest.raises(CheckpointError, match="do not fit the model") as raised:
        load_saved_weights(torch.nn.Linear(4, 2), path)
    assert "\n" not in str(raised.value), "one paragraph"
    with pytest.raises(CheckpointError, match="is missing"):
        load_saved_weights(torch.nn.Linear(3, 2), str(tmp_path / "none"))
