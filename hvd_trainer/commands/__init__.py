"""The subcommands, one module each: train, evaluate, predict, export, tune_batch_size, visualize, doctor,
and example (no subcommand: the built-in digits job).

Every subcommand works under horovodrun/mpirun/srun: all ranks run the same code, only rank 0
writes shared files and prints tables. Decisions that could differ between ranks (the run
directory's name, say) are made on rank 0 and broadcast.
"""
from __future__ import annotations

from typing import Callable, Dict

from hvd_trainer.commands import doctor, evaluate, example, export, predict, train, tune_batch_size, visualize
from hvd_trainer.options import (CommandOptions, DoctorOptions, EvaluateOptions, ExampleOptions, ExportOptions,
                                 PredictOptions, TrainOptions, TuneBatchSizeOptions, VisualizeOptions)

#: Options type -> the command that runs it; each returns the process's exit code.
COMMANDS: Dict[type, Callable[..., int]] = {
    TrainOptions: train.run,
    EvaluateOptions: evaluate.run,
    PredictOptions: predict.run,
    ExportOptions: export.run,
    TuneBatchSizeOptions: tune_batch_size.run,
    VisualizeOptions: visualize.run,
    DoctorOptions: doctor.run,
    ExampleOptions: example.run,
}


def run_command(options: CommandOptions) -> int:
    """Run the subcommand that `options` belong to; returns the exit code."""
    return COMMANDS[type(options)](options)
