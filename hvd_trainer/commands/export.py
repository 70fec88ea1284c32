"""`export`: a trained model as one TorchScript or ONNX file that runs without hvd_trainer.

    python -m hvd_trainer export --model-path results/experiment_run --format onnx [--output m.onnx]

Writes the model file (preprocessing and output decoding inside, hvd_trainer.export.graph) and
its signature beside it (`<file>.signature.json`: input order and dtypes, the string lookups),
then runs the file back (torch.jit.load, or onnxruntime) and checks it against the trained
model before reporting success. Export is one process's job: it reads the run directory and
writes files, and under a launcher every rank would write the same files.
"""
from __future__ import annotations

import json
import os

from hvd_trainer.checkpoint import atomic_write_text
from hvd_trainer.commands.shared import writing_into
from hvd_trainer.commands.trained_model import load_saved_weights, read_saved_run
from hvd_trainer.errors import LaunchError
from hvd_trainer.options import ExportOptions


def run(options: ExportOptions) -> int:
    from hvd_trainer.distributed.launcher import detect_launcher
    from hvd_trainer.export.formats import check_exported, default_output, require_onnx, write_model
    from hvd_trainer.export.graph import ExportableModel
    from hvd_trainer.export.signature import SIGNATURE_SUFFIX, build_signature
    from hvd_trainer.models.feature_model import build_model

    if (detect_launcher().size or 1) > 1:
        raise LaunchError("export writes one file from one process; run it without horovodrun, mpirun or srun: "
                          f"python -m hvd_trainer export --model-path {options.model_path} --format {options.format}")
    if options.format == "onnx":
        require_onnx()
    saved = read_saved_run(options.model_path)
    model = build_model(saved.job.model, saved.metadata)
    load_saved_weights(model, saved.layout.weights)
    input_types = [(f.name, f.type) for f in saved.job.model.input_features]
    exportable = ExportableModel(model, input_types, saved.metadata)

    output = options.output or default_output(saved.layout.root, options.format)
    signature_path = output + SIGNATURE_SUFFIX
    with writing_into(os.path.dirname(output) or "."):
        os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
        tmp = f"{output}.tmp"
        output_names = write_model(exportable, options.format, tmp)
        check_exported(exportable, options.format, tmp)
        os.replace(tmp, output)
        signature = build_signature(input_types, output_names, saved.metadata, options.format,
                                    os.path.basename(output))
        atomic_write_text(signature_path, json.dumps(signature, indent=2) + "\n")
    print(f"Exported {options.format} model: {output}\n  Signature (inputs, outputs, vocabularies): {signature_path}",
          flush=True)
    return 0
