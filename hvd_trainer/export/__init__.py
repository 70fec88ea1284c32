"""Exporting a trained model for use without hvd_trainer: TorchScript or ONNX, plus a signature.

    python -m hvd_trainer export --model-path results/experiment_run --format onnx

- `graph.py`: `ExportableModel`, the trained model with its preprocessing (fill missing values,
  normalise numbers, map category indices) and its output decoding (unnormalise numbers) as
  tensor operations, so that they travel inside the exported file;
- `signature.py`: the sidecar JSON (`<model file>.signature.json`, e.g. model.onnx.signature.json) that says which tensors go in and
  come out, and the vocabularies that turn strings into those tensors (a string lookup cannot be
  a tensor operation in ONNX); `encode_rows` and `decode_labels` apply it;
- `formats.py`: writing each format, loading it back, and checking it against the model.
"""
