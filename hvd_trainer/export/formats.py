"""Writing an ExportableModel as TorchScript or ONNX, running the file back, and checking it.

TorchScript is traced (`torch.jit.trace`): the graph holds no data-dependent control flow, and
tracing keeps the dict of outputs. ONNX uses torch's TorchScript-based exporter (`dynamo=False`,
which needs the `onnx` package) with the batch dimension dynamic; the file is run back with
onnxruntime. Both are checked against the model they came from on rows of another batch size
than the one traced, so a shape frozen by tracing shows up here and not in a user's service.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Dict, List, Mapping

import numpy as np
import torch
from torch import nn

from hvd_trainer.errors import ConfigError
from hvd_trainer.export.graph import ExportableModel

#: Default file name per format, under the run directory's exported/ folder.
DEFAULT_FILES = {"torchscript": "model.pt", "onnx": "model.onnx"}
ONNX_OPSET = 17
TRACE_BATCH, CHECK_BATCH = 7, 5
#: Exported and eager outputs may differ by float rounding (fused kernels), no more.
CHECK_TOLERANCE = 1e-5


def require_onnx() -> None:
    """Refuse an ONNX export before any work when `onnx` (the exporter) or onnxruntime is missing."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"Exporting to ONNX needs the Python package(s) {', '.join(missing)}, which are not installed: torch "
            "writes the file with `onnx`, and the export is checked by running it in onnxruntime. Install them "
            "with `pip install 'hvd_trainer[export]'` (or `pip install onnx onnxruntime`), or export with "
            "--format torchscript."
        )


def write_model(exportable: ExportableModel, export_format: str, path: str) -> List[str]:
    """Write the file; returns the output names in the order the file returns them."""
    return WRITERS[export_format](exportable, path)


def _write_torchscript(exportable: ExportableModel, path: str) -> List[str]:
    with torch.no_grad():
        example = exportable.sample_inputs(TRACE_BATCH)
        traced = torch.jit.trace(exportable, example, strict=False, check_trace=False)
        names = list(exportable(*example))
    traced.save(path)
    return names


class _TupleOutputs(nn.Module):
    """The outputs as a tuple, in the dict's order: the ONNX exporter names a tuple's items by output_names."""

    def __init__(self, exportable: ExportableModel):
        super().__init__()
        self.exportable = exportable

    def forward(self, *inputs):
        return tuple(self.exportable(*inputs).values())


def _write_onnx(exportable: ExportableModel, path: str) -> List[str]:
    example = exportable.sample_inputs(TRACE_BATCH)
    with torch.no_grad():
        names = list(exportable(*example))
    dynamic = {name: {0: "batch"} for name in exportable.input_names + names}
    torch.onnx.export(_TupleOutputs(exportable), example, path, dynamo=False, opset_version=ONNX_OPSET,
                      input_names=exportable.input_names, output_names=names, dynamic_axes=dynamic)
    return names


WRITERS: Dict[str, Callable[[ExportableModel, str], List[str]]] = {
    "torchscript": _write_torchscript, "onnx": _write_onnx}


def load_runner(export_format: str, path: str) -> Callable[[Mapping[str, np.ndarray]], Dict[str, np.ndarray]]:
    """A function: {input name: array} -> {output name: array}, running the exported file itself.

    The inputs must come in the signature's order (a traced TorchScript module takes them by position).
    """
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        output_names = [o.name for o in session.get_outputs()]
        return lambda inputs: dict(zip(output_names, session.run(None, dict(inputs))))
    module = torch.jit.load(path)

    def run(inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.asarray(v)) for v in inputs.values()])
        return {k: v.numpy() for k, v in out.items()}
    return run


def check_exported(exportable: ExportableModel, export_format: str, path: str) -> None:
    """Run the written file on sample rows; a RuntimeError (a bug, not bad input) when it differs from the model."""
    sample = exportable.sample_inputs(CHECK_BATCH, seed=1)
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in exportable(*sample).items()}
    got = load_runner(export_format, path)(dict(zip(exportable.input_names, (x.numpy() for x in sample))))
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape or not np.allclose(
                have.astype(np.float64), want.astype(np.float64), rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
            raise RuntimeError(f"The exported {export_format} model {path} does not reproduce the trained model's "
                               f"output {name!r} (expected {want[:3]!r}..., got "
                               f"{None if have is None else have[:3]!r}...). This is a bug in hvd_trainer's export.")


def default_output(run_root: str, export_format: str) -> str:
    return os.path.join(run_root, "exported", DEFAULT_FILES[export_format])
