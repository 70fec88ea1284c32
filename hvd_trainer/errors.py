"""Errors that hvd_trainer raises for bad input.

Each message is one paragraph that names the cause and the fix. The CLI prints these without
a traceback and exits with EXIT_INPUT_ERROR; anything else that escapes is a bug and keeps its
traceback.
"""

#: The exit status of a run stopped by an HvdTrainerError (bad config, data, checkpoint or launch).
EXIT_INPUT_ERROR = 2


class HvdTrainerError(Exception):
    """Base class for errors caused by input, environment or launch, not by a bug."""


class ConfigError(HvdTrainerError, ValueError):
    """A config key, value or combination that cannot be used."""


class DataError(HvdTrainerError, ValueError):
    """A dataset that cannot be read or does not match the config."""


class LaunchError(HvdTrainerError, RuntimeError):
    """A launch (horovodrun, mpirun, srun) or a Horovod build that cannot work."""


class CheckpointError(HvdTrainerError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model."""


class TrainingDivergedError(HvdTrainerError, FloatingPointError):
    """The loss or the weights became NaN or infinite."""
