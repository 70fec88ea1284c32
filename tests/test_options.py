"""The command line becomes typed options: one frozen dataclass per subcommand, no Namespace."""
import pytest

from hvd_trainer.options import (DoctorOptions, EvaluateOptions, ExampleOptions, TrainOptions, build_parser,
                                 parse_run_options)


def test_no_subcommand_is_the_builtin_example():
    options = parse_run_options([])
    assert options.command == ExampleOptions() and options.log_level == "info"


def test_train_flags_become_train_options_with_the_documented_defaults():
    options = parse_run_options(["--log-level", "debug", "train", "-c", "c.yaml", "--dataset", "d.csv",
                                 "--set", "trainer.epochs=3", "--set", "trainer.batch_size=8"])
    assert options.log_level == "debug"
    assert options.command == TrainOptions(config="c.yaml", dataset="d.csv",
                                           overrides=("trainer.epochs=3", "trainer.batch_size=8"))
    assert (options.command.output_directory, options.command.experiment_name, options.command.model_name,
            options.command.random_seed) == ("results", "experiment", "run", 42)


def test_options_are_frozen():
    options = parse_run_options(["train", "--resume", "results/x"])
    with pytest.raises(AttributeError):
        options.command.resume = None


def test_evaluate_and_doctor_options():
    assert parse_run_options(["evaluate", "--model-path", "m", "--dataset", "d", "--split", "test"]).command == \
        EvaluateOptions(model_path="m", dataset="d", split="test")
    assert parse_run_options(["doctor", "--hosts", "h1:2,h2:2", "--ssh-port", "2222"]).command == \
        DoctorOptions(hosts="h1:2,h2:2", ssh_port=2222)


def test_every_flag_lands_in_a_field_of_its_options():
    """A flag added to the parser but not to its dataclass would be silently dropped."""
    from hvd_trainer.options import COMMANDS
    import dataclasses

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, options_class in COMMANDS.items():
        dests = {a.dest for a in subparsers[name]._actions if a.dest != "help"}
        assert dests == {f.name for f in dataclasses.fields(options_class)}, name
