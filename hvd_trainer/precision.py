"""Mixed precision policy: what a trainer autocasts to, and the GradScaler that goes with it.

On a GPU, fp16 autocast with a GradScaler (fp16's narrow range needs the loss scaled). On the
CPU, bf16 autocast: bf16 has fp32's range and needs no scaling, but a GradScaler is kept all the
same, so that the one mixed-precision path (scale, unscale before clipping, skip steps with
infinite gradients, the scaler's state in checkpoints and its broadcast on resume) runs, and is
tested, on machines without a GPU.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from hvd_trainer.distributed.base import DistributedStrategy

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    #: "cuda" or "cpu" for autocast; None trains in fp32.
    autocast_device: Optional[str] = None
    dtype: Optional[torch.dtype] = None
    scaler: Optional[torch.amp.GradScaler] = None

    def autocast(self) -> ContextManager:
        """The forward pass's context: autocast to `dtype`, or nothing in fp32."""
        if self.autocast_device is None:
            return contextlib.nullcontext()
        return torch.autocast(self.autocast_device, dtype=self.dtype)


def precision_for(use_mixed_precision: bool, device: torch.device, distributed: DistributedStrategy) -> Precision:
    """fp16 + GradScaler on CUDA, bf16 + GradScaler on the CPU, fp32 when not asked or not allowed."""
    if not use_mixed_precision:
        return Precision()
    if not distributed.allow_mixed_precision():
        logger.warning("The %s strategy does not allow mixed precision; training in fp32.", distributed.name)
        return Precision()
    if device.type == "cuda":
        return Precision("cuda", torch.float16, torch.amp.GradScaler("cuda"))
    return Precision("cpu", torch.bfloat16, torch.amp.GradScaler("cpu"))
