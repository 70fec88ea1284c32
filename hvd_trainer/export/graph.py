"""ExportableModel: raw feature values in, predictions in the data's own scale out, as one graph.

The exported file takes one tensor per input feature, in the config's order, named after it:

    number    float64 [batch], NaN where the value is missing (filled and normalised inside)
    binary    float64 [batch], 1.0 / 0.0, NaN where missing (filled inside)
    category  int64   [batch], the value's index in the vocabulary, -1 where missing (filled
              inside); an index outside the vocabulary reads as <UNK> (0), as predict does

and returns, per output feature, `<name>_predictions` (a number output unnormalised, in float64
as predict writes it; a category's vocabulary index; a binary's bool) and, for category and
binary outputs, `<name>_probabilities`. Strings become indices with the vocabularies in the
signature (hvd_trainer.export.signature); everything numeric happens here, in the same
arithmetic as hvd_trainer.data's transforms, so that the outputs equal predict's.

Every operation is a tensor operation whose control flow does not depend on the data, so the
module traces (TorchScript) and exports (ONNX) without special cases.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from hvd_trainer.features.number import denormalize_number, normalize_number

#: What stands for a missing value in each input type's tensor.
MISSING_INDEX = -1
INPUT_DTYPES = {"number": torch.float64, "binary": torch.float64, "category": torch.int64}


class ExportableModel(nn.Module):
    """A trained FeatureModel between its input preprocessing and its output decoding."""

    def __init__(self, model: nn.Module, input_types: Sequence[Tuple[str, str]], metadata: Mapping[str, Any]):
        super().__init__()
        self.model = model.eval()
        #: (feature name, type) of each positional input, in the config's order.
        self.input_types: List[Tuple[str, str]] = list(input_types)
        self.metadata = {name: metadata[name] for name, _ in self.input_types}
        self.output_metadata = {name: metadata[name] for name in model.output_features}
        self.eval()  # dropout off, BatchNorm on its running statistics, as predict runs the model

    @property
    def input_names(self) -> List[str]:
        return [name for name, _ in self.input_types]

    def forward(self, *inputs: torch.Tensor) -> Dict[str, torch.Tensor]:
        prepared = {name: self._prepare(name, kind, x) for (name, kind), x in zip(self.input_types, inputs)}
        logits = self.model(prepared)
        outputs: Dict[str, torch.Tensor] = {}
        for name, feature in self.model.output_features.items():
            for key, value in feature.predictions(logits[name]).items():
                if key == "predictions" and self.output_metadata[name]["type"] == "number":
                    # predict unnormalises in float64 (hvd_trainer.features.number.NumberType.decode).
                    value = denormalize_number(value.double(), self.output_metadata[name])
                outputs[f"{name}_{key}"] = value
        return outputs

    def _prepare(self, name: str, kind: str, x: torch.Tensor) -> torch.Tensor:
        meta = self.metadata[name]
        fill = meta["preprocessing"]["computed_fill_value"]
        if kind == "number":
            # float64 as in NumberType.transform, then float32 as the model reads it.
            filled = torch.where(torch.isnan(x), torch.full_like(x, float(fill)), x)
            return normalize_number(filled, meta).float()
        if kind == "binary":
            return torch.where(torch.isnan(x), torch.full_like(x, 1.0 if fill else 0.0), x).float()
        vocab_size = int(meta["vocab_size"])
        filled = torch.where(x == MISSING_INDEX, torch.full_like(x, int(meta["str2idx"].get(fill, 0))), x)
        return torch.where((filled < 0) | (filled >= vocab_size), torch.zeros_like(filled), filled)

    def sample_inputs(self, batch_size: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        """Inputs of the right dtypes, with a missing value in each column (for tracing and checks)."""
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for name, kind in self.input_types:
            if kind == "number":
                x = torch.randn(batch_size, generator=generator, dtype=torch.float64) * 3
                x[0] = float("nan")
            elif kind == "binary":
                x = torch.randint(0, 2, (batch_size,), generator=generator).double()
                x[0] = float("nan")
            else:
                x = torch.randint(0, int(self.metadata[name]["vocab_size"]), (batch_size,), generator=generator)
                x[0] = MISSING_INDEX
            samples.append(x)
        return tuple(samples)
