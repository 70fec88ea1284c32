"""Mixed precision policy: whether a trainer autocasts, and the GradScaler that goes with it."""
from __future__ import annotations

import logging
from typing import Optional

import torch

from hvd_trainer.distributed.base import DistributedStrategy

logger = logging.getLogger(__name__)


def grad_scaler_for(use_mixed_precision: bool, device: torch.device,
                    distributed: DistributedStrategy) -> Optional[torch.amp.GradScaler]:
    """A GradScaler when mixed precision is asked for and can run, else None (fp32, with a warning why)."""
    if not use_mixed_precision:
        return None
    if not (torch.cuda.is_available() and device.type == "cuda"):
        logger.warning("trainer.use_mixed_precision needs a CUDA device; training in fp32 on %s.", device)
        return None
    if not distributed.allow_mixed_precision():
        logger.warning("The %s strategy does not allow mixed precision; training in fp32.", distributed.name)
        return None
    return torch.amp.GradScaler("cuda")
