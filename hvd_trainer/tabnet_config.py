"""The `combiner: {type: tabnet}` section: Ludwig's TabNet combiner settings, names and defaults.

TabNet (Arik & Pfister, 2019) is built by hvd_trainer.models.tabnet from this config. Paper
symbols are given in each field's help (N_a, N_d, gamma, ...). Two keys that Ludwig's own
examples carry but Ludwig ignores (`bn_virtual_divider`, `use_keras_batch_norm`) are accepted
with a warning; the entmax modes that need a root search (`constant`, `adaptive`) are refused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from hvd_trainer.config_schema import from_dict
from hvd_trainer.errors import ConfigError
from hvd_trainer.features.config import config_field

logger = logging.getLogger(__name__)

ENTMAX_MODES = ("sparsemax", "entmax15")
#: Ludwig's modes that hvd_trainer does not implement (both need a bisection for the threshold).
LUDWIG_ONLY_ENTMAX_MODES = ("constant", "adaptive")
#: Keys Ludwig's schema lets through and never reads: {key: what to set instead}.
IGNORED_KEYS = {
    "bn_virtual_divider": "bn_virtual_bs (the virtual batch size itself, B_v)",
    "use_keras_batch_norm": "nothing (batch norm is always PyTorch's)",
}


@dataclass
class TabNetCombinerConfig:
    type: str = config_field("tabnet", "TabNet (Arik & Pfister, 2019).", choices=("tabnet",))
    size: int = config_field(32, "Width of the attention part of each step's output (N_a).", min=1)
    output_size: int = config_field(128, "Width of the decision part and of the combiner's output (N_d).", min=1)
    dropout: float = config_field(0.05, "Dropout on the combiner's output.", min=0, max=0.999)
    num_steps: int = config_field(3, "Decision steps (N_steps).", min=1)
    num_total_blocks: int = config_field(4, "Feature transformer blocks per step.", min=1)
    num_shared_blocks: int = config_field(2, "Of those, the first ones whose linear layers all steps share.", min=0)
    relaxation_factor: float = config_field(1.5, "How freely a feature is reused across steps (gamma; 1: once).",
                                            min=0)
    bn_epsilon: float = config_field(1e-3, "Epsilon of every batch norm.", gt=0)
    bn_momentum: float = config_field(0.05, "Momentum of every batch norm (PyTorch's convention, 1 - m_B).",
                                      min=0, max=1)
    bn_virtual_bs: Optional[int] = config_field(1024, "Ghost batch norm's virtual batch size (B_v); null: plain "
                                                "batch norm over the whole batch.", min=1)
    sparsity: float = config_field(1e-4, "Weight of the mask entropy added to the training loss (lambda_sparse).",
                                   min=0)
    entmax_mode: str = config_field("sparsemax", "How masks are normalized: sparsemax or entmax15.",
                                    choices=ENTMAX_MODES)
    entmax_alpha: float = config_field(1.5, "Ludwig's alpha of the constant/adaptive modes (unused by these two).",
                                       min=1, max=2)

    def __post_init__(self):
        if self.num_shared_blocks > self.num_total_blocks:
            raise ValueError(
                f"num_shared_blocks ({self.num_shared_blocks}) is more than num_total_blocks "
                f"({self.num_total_blocks}); the shared blocks are among the total, so lower num_shared_blocks "
                "or raise num_total_blocks."
            )


def tabnet_config(data: Mapping[str, Any]) -> TabNetCombinerConfig:
    """The validated tabnet combiner section (`data` has already lost Ludwig's harmless keys)."""
    data: Dict[str, Any] = dict(data)
    for key, instead in IGNORED_KEYS.items():
        if key in data:
            value = data.pop(key)
            logger.warning("combiner.%s (%r) is ignored, as Ludwig ignores it; set %s instead.", key, value, instead)
    mode = data.get("entmax_mode")
    if mode in LUDWIG_ONLY_ENTMAX_MODES:
        raise ConfigError(
            f"combiner.entmax_mode is {mode!r}: this Ludwig option is not supported by hvd_trainer. Its masks are "
            f"normalized by sparsemax (Ludwig's default) or entmax15, which have exact closed forms; the {mode} "
            "mode needs a bisection search for every mask. Set entmax_mode: sparsemax or entmax15."
        )
    return from_dict(TabNetCombinerConfig, data, "combiner")
