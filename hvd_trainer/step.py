"""One training step: forward, backward, the gradients' allreduce, unscale, clip, optimizer step.

Horovod's order, visibly: the DistributedOptimizer averages gradients in backward hooks; the
step waits for that (`wait_optimizer_synced`) before gradients are unscaled (mixed precision)
and clipped, then steps under `prepare_optimizer_update` (skip_synchronize) so the allreduce is
not run twice. With gradient accumulation, batches that do not step only run backward.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from hvd_trainer.config import TrainerConfig
from hvd_trainer.control import Control
from hvd_trainer.distributed.base import DistributedStrategy
from hvd_trainer.models.base import BaseModel
from hvd_trainer.precision import precision_for

Tensors = Dict[str, torch.Tensor]


class TrainStep:
    """Runs one batch through the model and (when it steps) the optimizer."""

    def __init__(self, config: TrainerConfig, model: BaseModel, compiled_model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, distributed: DistributedStrategy, device: torch.device):
        self.config = config
        self.model = model
        self.compiled_model = compiled_model
        self.optimizer = optimizer
        self.distributed = distributed
        #: Autocast dtype and GradScaler for mixed precision (see precision.py); no scaler in fp32.
        self.precision = precision_for(config.use_mixed_precision, device, distributed)
        self.scaler = self.precision.scaler
        self.accumulation = config.gradient_accumulation_steps_resolved()
        #: Whether each batch is folded into the training metrics (only when an evaluation reads them).
        self.accumulate_metrics = True
        # Looked up once: walking the modules for them every step costs ~0.1 ms on a small MLP.
        self._trainable_parameters = [p for p in model.parameters() if p.requires_grad]
        clipping = config.gradient_clipping
        self._clipping_on = distributed.allow_clip_gradients() and any(
            (clipping.clipglobalnorm, clipping.clipnorm, clipping.clipvalue))

    def __call__(self, inputs: Tensors, targets: Tensors, should_step: bool = True,
                 control: Optional[Control] = None) -> Tuple[torch.Tensor, Tensors]:
        """(loss, per-output losses) of the batch; control, when given, carries a rank agreement."""
        if isinstance(self.optimizer, torch.optim.LBFGS):
            return self._lbfgs(inputs, targets, control)
        scaler, distributed, optimizer = self.scaler, self.distributed, self.optimizer
        with self.precision.autocast(), distributed.prepare_model_update(self.compiled_model, should_step=should_step):
            outputs = self.compiled_model(inputs)
            loss, all_losses = self.model.train_loss(targets, outputs, self.config.regularization_type,
                                                     self.config.regularization_lambda)
            scaled = loss / self.accumulation if self.accumulation > 1 else loss
        if scaler is not None:
            scaler.scale(scaled).backward()
        else:
            distributed.backward(scaled, self.compiled_model)
        if not should_step:
            return loss, all_losses
        if control is not None:
            # Submitted right behind the last gradients, so that Horovod fuses it into their
            # allreduce cycle instead of running a cycle of its own (measured at np=2: about 10%
            # of a small MLP's throughput when submitted before the forward pass).
            control.submit()
        # Horovod: gradients must be averaged before they are unscaled and clipped.
        distributed.wait_optimizer_synced(optimizer)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self._clipping_on:
            clip_grads(self._trainable_parameters, self.config)
        with distributed.prepare_optimizer_update(optimizer):
            if scaler is not None:
                scaler.step(optimizer)
            else:
                distributed.step(optimizer)
        if scaler is not None:
            scaler.update()
        if self.accumulate_metrics:
            self.model.update_metrics(targets, outputs, (loss, all_losses))
        distributed.zero_grad(optimizer)
        return loss, all_losses

    def _lbfgs(self, inputs: Tensors, targets: Tensors, control: Optional[Control]) -> Tuple[torch.Tensor, Tensors]:
        """L-BFGS re-evaluates its closure inside step(); each evaluation averages loss and gradients over ranks.

        Every rank then sees the same loss and gradient at every evaluation, so every rank takes the
        same line-search decisions and the same number of evaluations (the collectives stay paired),
        and the step is the one a single process would take on all ranks' rows (equal batches).
        """
        reg_type, reg_lambda = self.config.regularization_type, self.config.regularization_lambda
        if control is not None:
            control.submit()  # nothing to overlap with: the closure's allreduces are synchronous
        params = self._trainable_parameters

        def closure():
            self.distributed.zero_grad(self.optimizer)
            loss, _ = self.model.train_loss(targets, self.compiled_model(inputs), reg_type, reg_lambda)
            self.distributed.backward(loss, self.compiled_model)
            if self.distributed.size() == 1:
                return loss
            # Horovod: one allreduce for the loss and every gradient together, averaged.
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            flat = torch.cat([loss.detach().reshape(1)] + [g.reshape(-1) for g in grads])
            flat = self.distributed.allreduce(flat, op="average")
            offset = 1
            for p, g in zip(params, grads):
                p.grad = flat[offset: offset + g.numel()].view_as(p).clone()
                offset += g.numel()
            return flat[0]

        self.distributed.step(self.optimizer, closure)
        with torch.no_grad():
            outputs = self.compiled_model(inputs)
            loss, all_losses = self.model.train_loss(targets, outputs, reg_type, reg_lambda)
        if self.accumulate_metrics:
            self.model.update_metrics(targets, outputs, (loss, all_losses))
        return loss, all_losses


def clip_grads(variables, config: TrainerConfig) -> None:
    """clipglobalnorm, then clipnorm, then clipvalue, as configured."""
    clipping = config.gradient_clipping
    if clipping.clipglobalnorm:
        torch.nn.utils.clip_grad_norm_(variables, clipping.clipglobalnorm)
    if clipping.clipnorm:
        torch.nn.utils.clip_grad_norm_(variables, clipping.clipnorm)
    if clipping.clipvalue:
        torch.nn.utils.clip_grad_value_(variables, clipping.clipvalue)
