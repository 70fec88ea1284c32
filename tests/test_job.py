"""JobConfig: one load for model, trainer and distributed sections; command line over file over defaults."""
import json

import pytest
import yaml

from hvd_trainer.errors import ConfigError
from hvd_trainer.examples import example_config_path
from hvd_trainer.config import DistributedConfig
from hvd_trainer.job import JobConfig, command_line_distributed
from hvd_trainer.run_layout import RunLayout


@pytest.fixture
def config_file(tmp_path):
    config = yaml.safe_load(open(example_config_path("digits")))
    config["trainer"] = {"epochs": 7, "learning_rate": 0.01}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def saved_run(tmp_path, config_file):
    layout = RunLayout(str(tmp_path / "exp_run"))
    (tmp_path / "exp_run" / "model").mkdir(parents=True)
    with open(layout.hyperparameters, "w") as fh:
        json.dump(yaml.safe_load(config_file.read_text()), fh)
    return layout


def test_the_command_line_wins_over_the_file_which_wins_over_the_defaults(config_file):
    job = JobConfig.load(str(config_file), ["trainer.epochs=3"])
    assert job.trainer.epochs == 3  # --set
    assert job.trainer.learning_rate == 0.01  # the file
    assert job.trainer.early_stop == 5 and job.distributed.strategy == "auto"  # defaults
    assert job.as_given["trainer"] == {"epochs": 3, "learning_rate": 0.01}  # what model_hyperparameters.json records


def test_every_section_is_validated_at_load(config_file):
    with pytest.raises(ConfigError, match="distributed.op"):
        JobConfig.load(str(config_file), ["distributed.op=max"])
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        JobConfig.load(str(config_file), ["trainer.epoch=3"])


def test_resume_keeps_the_saved_model_and_takes_new_trainer_settings(saved_run):
    job = JobConfig.for_resume(saved_run, None, ["trainer.epochs=9", "distributed.strategy=local"])
    assert job.trainer.epochs == 9 and job.trainer.learning_rate == 0.01 and job.distributed.strategy == "local"


def test_resume_refuses_to_change_the_model(saved_run, config_file, tmp_path):
    with pytest.raises(ConfigError, match="only trainer.\\* and distributed.\\*"):
        JobConfig.for_resume(saved_run, None, ["combiner.output_size=8"])
    changed = yaml.safe_load(config_file.read_text())
    changed["combiner"]["output_size"] = 64
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    with pytest.raises(ConfigError, match="describes another model"):
        JobConfig.for_resume(saved_run, str(path), [])


def test_resume_of_a_directory_without_a_run_names_the_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no model/model_hyperparameters.json in it"):
        JobConfig.for_resume(RunLayout(str(tmp_path)), None, [])


def test_a_saved_config_loads_as_it_was_trained(saved_run):
    job = JobConfig.saved(saved_run.hyperparameters)
    assert job.trainer.epochs == 7 and [f.name for f in job.model.output_features] == ["label"]


def test_the_distributed_section_of_the_command_line_alone_needs_no_file():
    # What every rank can start talking with before rank 0 has read any config file.
    assert command_line_distributed(()) == DistributedConfig()
    assert command_line_distributed(["trainer.epochs=3", "distributed.compression=fp16"]) == \
        DistributedConfig(compression="fp16")
    assert command_line_distributed(["distributed={strategy: local}"]).strategy == "local"
    with pytest.raises(ConfigError, match="distributed.op"):
        command_line_distributed(["distributed.op=median"])
