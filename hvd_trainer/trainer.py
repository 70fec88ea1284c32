"""Trainer: Ludwig's ECD training loop on a DistributedStrategy.

The loop, in short: shard the data, scale the LR by world size, broadcast rank 0's weights and
optimizer state, then per batch forward -> backward (gradients averaged by the strategy) ->
clip -> step; every `steps_per_checkpoint` steps evaluate on all ranks' data, save a
checkpoint, and decide together whether to stop. Anything that can differ between ranks (a
signal, a NaN loss, an early-stop vote) is agreed through a collective before any rank acts.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from hvd_trainer import signals
from hvd_trainer.callbacks import Callback, overriding
from hvd_trainer.checkpoint import LATEST, CheckpointManager, load_checkpoint_file, set_rng_state
from hvd_trainer.config import TrainerConfig
from hvd_trainer.data.dataset import Batcher, Dataset
from hvd_trainer.distributed import DistributedStrategy, init_dist_strategy
from hvd_trainer.distributed.base import PendingReduce
from hvd_trainer.errors import CheckpointError, ConfigError, TrainingDivergedError
from hvd_trainer.lr_scheduler import LRScheduler
from hvd_trainer.models.base import COMBINED, BaseModel
from hvd_trainer.models.outputs import LOSS, higher_is_better
from hvd_trainer.plateau import Plateau, improves, plateau_update
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.summary import (NullSummaryWriter, create_summary_writers, format_metrics_table, write_eval_summary,
                                 write_step_summary)

logger = logging.getLogger(__name__)

TRAINING_PROGRESS_FILE = "training_progress.json"
TRAINING_CHECKPOINTS_DIR = "training_checkpoints"
MODEL_WEIGHTS_FILE = "model_weights"
LOGS_DIR = "logs"

NONFINITE_BASE = float(2**40)

#: Without a GPU, batch size tuning stops here: beyond it CPU throughput no longer improves
#: and memory, not speed, becomes the limit (Ludwig uses the same cap).
MAX_CPU_BATCH_SIZE = 128


def scaled_learning_rate(base: float, scaling: str, world_size: int) -> float:
    """The LR every rank uses: data parallelism multiplies the effective batch by world_size."""
    if scaling == "linear":
        return base * world_size
    if scaling == "sqrt":
        return base * math.sqrt(world_size)
    return base


def initial_best(metric: str) -> float:
    return -math.inf if higher_is_better(metric) else math.inf


@dataclass
class TrainingSession:
    """The working state of one train() call, kept together instead of passed piecemeal."""

    save_path: str
    progress_tracker: ProgressTracker
    batcher: Batcher
    checkpoint_manager: CheckpointManager
    writers: Dict[str, Any]
    training_set: Dataset
    validation_set: Optional[Dataset]
    test_set: Optional[Dataset]
    total_steps: int
    steps_per_checkpoint: int
    steps_per_epoch: int
    early_stopping_steps: int
    #: The step at which the next evaluation and checkpoint happen.
    next_evaluation: int
    has_validation: bool
    progress_bar: Any = None
    start_time: float = field(default_factory=time.time)
    last_loss: Optional[torch.Tensor] = None
    last_losses: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def progress_path(self) -> str:
        return os.path.join(self.save_path, TRAINING_PROGRESS_FILE)

    @property
    def weights_path(self) -> str:
        return os.path.join(self.save_path, MODEL_WEIGHTS_FILE)


class Trainer:
    """Trains a BaseModel with the `trainer:` config on a DistributedStrategy."""

    def __init__(
        self,
        config: Union[TrainerConfig, Dict[str, Any], None],
        model: BaseModel,
        resume: bool = False,
        skip_save_model: bool = False,
        skip_save_progress: bool = False,
        skip_save_log: bool = False,
        callbacks: Optional[List[Callback]] = None,
        random_seed: int = 42,
        distributed: Optional[DistributedStrategy] = None,
        device: Optional[str] = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"Trainer got unexpected arguments: {', '.join(sorted(kwargs))}.")
        # ---- core config --------------------------------------------------------------------
        self.config: TrainerConfig = config if isinstance(config, TrainerConfig) else TrainerConfig.from_dict(config)
        self.resume = resume
        self.skip_save_model = skip_save_model
        self.skip_save_progress = skip_save_progress
        self.skip_save_log = skip_save_log
        self.random_seed = random_seed
        self.callbacks: List[Callback] = list(callbacks or [])

        # ---- swappable components ---------------------------------------------------------
        self.distributed: DistributedStrategy = distributed or init_dist_strategy("auto")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model: BaseModel = model.to(self.device)
        self.base_learning_rate = scaled_learning_rate(
            self.config.learning_rate, self.config.learning_rate_scaling, self.distributed.size())
        self.compiled_model = torch.compile(self.model) if self.config.compile else self.model

        self.use_amp = bool(self.config.use_mixed_precision)
        if self.use_amp and not (torch.cuda.is_available() and self.device.type == "cuda"):
            logger.warning("trainer.use_mixed_precision needs a CUDA device; training in fp32 on %s.", self.device)
            self.use_amp = False
        if self.use_amp and not self.distributed.allow_mixed_precision():
            logger.warning("The %s strategy does not allow mixed precision; training in fp32.", self.distributed.name)
            self.use_amp = False
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None

        # ---- runtime state -----------------------------------------------------------------
        self.batch_size: Optional[int] = self.config.batch_size if isinstance(self.config.batch_size, int) else None
        self.eval_batch_size: Optional[int] = (
            self.config.eval_batch_size if isinstance(self.config.eval_batch_size, int) else None)
        self.gradient_accumulation_steps = self.config.gradient_accumulation_steps_resolved()
        self.stop_reason: Optional[str] = None
        self._signals = signals.StopSignals()
        self._nonfinite_step: Optional[int] = None
        self._pending_control = None
        self._control_due = False
        #: Control agreements (see _submit_control): the optimizer step of the next one, the
        #: current spacing in steps, and (time, optimizer step) of the last one; None after a
        #: pause in training (evaluation, epoch end), so that a pause is not counted as step time.
        self._next_control_step = 0
        self._control_spacing = self.CONTROL_FIRST_STEPS
        self._control_clock: Optional[Tuple[float, int]] = None
        #: Whether train_step folds each batch into the training metrics; decided per train().
        self._accumulate_metrics = True
        self._optimizer_steps = 0
        self._resume_state: Optional[Dict[str, Any]] = None
        self.last_progress_tracker: Optional[ProgressTracker] = None
        self.last_save_path: Optional[str] = None
        self.prepare()

    # ---- setup ----------------------------------------------------------------------------
    def prepare(self) -> None:
        self.dist_model, self.optimizer = self.distributed.prepare(self.compiled_model, self.config, self.base_learning_rate)
        self.scheduler = LRScheduler(self.config.learning_rate_scheduler, self.optimizer, base_lr=self.base_learning_rate)
        # Looked up once: walking the modules for them every step costs ~0.1 ms on a small MLP.
        self._trainable_parameters = [p for p in self.dist_model.parameters() if p.requires_grad]
        clipping = self.config.gradient_clipping
        self._clipping_on = self.distributed.allow_clip_gradients() and any(
            (clipping.clipglobalnorm, clipping.clipnorm, clipping.clipvalue))

    @property
    def validation_field(self) -> str:
        field_name = self.config.validation_field
        if field_name is None:
            field_name = COMBINED if len(self.model.output_features) > 1 else next(iter(self.model.output_features))
        return field_name

    @property
    def validation_metric(self) -> str:
        return self.config.validation_metric or LOSS

    def is_cpu_training(self) -> bool:
        return self.device == torch.device("cpu")

    def is_coordinator(self) -> bool:
        return self.distributed.rank() == 0

    def local_rank(self) -> int:
        return self.distributed.local_rank()

    def barrier(self) -> None:
        self.distributed.barrier()

    @property
    def return_device(self):
        return self.device

    def callback(self, fn, coordinator_only: bool = True) -> None:
        if not coordinator_only or self.is_coordinator():
            for cb in self.callbacks:
                fn(cb)

    # ---- one step -------------------------------------------------------------------------
    def train_step(
        self, inputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor], should_step: bool = True
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Forward, backward and (when should_step) the optimizer update for one batch."""
        reg_type, reg_lambda = self.config.regularization_type, self.config.regularization_lambda
        if isinstance(self.optimizer, torch.optim.LBFGS):
            if self._control_due:  # single process only (refused at size > 1): nothing to overlap
                self._control_due = False
                self._submit_control()

            def closure():
                self.distributed.zero_grad(self.optimizer)
                loss, _ = self.model.train_loss(targets, self.dist_model(inputs), reg_type, reg_lambda)
                self.distributed.backward(loss, self.dist_model)
                return loss

            self.distributed.step(self.optimizer, closure)
            with torch.no_grad():
                outputs = self.dist_model(inputs)
                loss, all_losses = self.model.train_loss(targets, outputs, reg_type, reg_lambda)
            if self._accumulate_metrics:
                self.model.update_metrics(targets, outputs, (loss, all_losses))
            return loss, all_losses

        autocast = torch.autocast("cuda") if self.use_amp else contextlib.nullcontext()
        with autocast, self.distributed.prepare_model_update(self.dist_model, should_step=should_step):
            outputs = self.dist_model(inputs)
            loss, all_losses = self.model.train_loss(targets, outputs, reg_type, reg_lambda)
            scaled = loss / self.gradient_accumulation_steps if self.gradient_accumulation_steps > 1 else loss
        if self.use_amp:
            self.scaler.scale(scaled).backward()
        else:
            self.distributed.backward(scaled, self.dist_model)
        if not should_step:
            return loss, all_losses

        if self._control_due:
            # Submitted right behind the last gradients, so that Horovod fuses it into their
            # allreduce cycle instead of running a cycle of its own (measured at np=2: about 10%
            # of a small MLP's throughput when submitted before the forward pass).
            self._control_due = False
            self._submit_control()
        # Horovod: gradients must be averaged before they are unscaled and clipped.
        self.distributed.wait_optimizer_synced(self.optimizer)
        if self.use_amp:
            self.scaler.unscale_(self.optimizer)
        if self._clipping_on:
            self.clip_grads(self._trainable_parameters)
        with self.distributed.prepare_optimizer_update(self.optimizer):
            if self.use_amp:
                self.scaler.step(self.optimizer)
            else:
                self.distributed.step(self.optimizer)
        if self.use_amp:
            self.scaler.update()
        if self._accumulate_metrics:
            self.model.update_metrics(targets, outputs, (loss, all_losses))
        self.distributed.zero_grad(self.optimizer)
        return loss, all_losses

    def clip_grads(self, variables) -> None:
        """clipglobalnorm, then clipnorm, then clipvalue, as configured."""
        clipping = self.config.gradient_clipping
        if clipping.clipglobalnorm:
            torch.nn.utils.clip_grad_norm_(variables, clipping.clipglobalnorm)
        if clipping.clipnorm:
            torch.nn.utils.clip_grad_norm_(variables, clipping.clipnorm)
        if clipping.clipvalue:
            torch.nn.utils.clip_grad_value_(variables, clipping.clipvalue)

    # ---- agreement between ranks ------------------------------------------------------------
    #: Ranks agree on stop requests and NaN losses about this many seconds of training apart,
    #: and on the step before each evaluation and the end. Each agreement is a collective that
    #: costs Horovod a negotiation cycle (measured on a small MLP at np=2: 7.0 -> 11.6 ms per
    #: step when done every step, and still 3-5% of its throughput every 20 steps), so its
    #: spacing in steps follows the step time: hundreds of steps for a small model, every step
    #: for one whose steps take a second. A signal or a NaN is acted on within about this time
    #: (SLURM's grace after SIGTERM is 30 s by default), at the same step on every rank.
    CONTROL_INTERVAL_SECONDS = 1.0
    #: A train() call agrees at its first step (which starts the clock) and then this many
    #: steps later (the first measured step time); later spacings stay within [1, CONTROL_MAX_STEPS].
    CONTROL_FIRST_STEPS = 4
    CONTROL_MAX_STEPS = 1000

    def _submit_control(self) -> None:
        """Start a control allreduce: [stop request, earliest non-finite step, seconds per step].

        Submitted after the backward pass (see train_step) and read after the step. Every rank
        submits one at the same optimizer steps.
        """
        # One max-reduction carries all three: the strongest stop request; the earliest NaN step
        # of any rank (encoded as NONFINITE_BASE - step, so the earliest is the largest); and the
        # slowest rank's seconds per step since the last agreement (0: not measured), from which
        # every rank derives the same spacing to the next one.
        now = time.perf_counter()
        seconds_per_step = 0.0
        if self._control_clock is not None and self._optimizer_steps > self._control_clock[1]:
            seconds_per_step = (now - self._control_clock[0]) / (self._optimizer_steps - self._control_clock[1])
        self._control_clock = (now, self._optimizer_steps)
        flags = torch.tensor([float(self._signals.requested),
                              NONFINITE_BASE - self._nonfinite_step if self._nonfinite_step is not None else 0.0,
                              seconds_per_step], dtype=torch.float64)
        if self.distributed.size() == 1:
            # Nothing to agree on; Horovod would still route it through its background thread.
            self._pending_control = PendingReduce(lambda: flags)
        else:
            self._pending_control = self.distributed.allreduce_async(flags, op="max")

    def _collect_control(self, session: TrainingSession) -> None:
        flags = self._pending_control.wait()
        self._pending_control = None
        stop, nonfinite, seconds_per_step = flags.tolist()
        stop, nonfinite = int(stop), int(nonfinite)
        if seconds_per_step > 0:
            self._control_spacing = max(1, min(self.CONTROL_MAX_STEPS,
                                               int(self.CONTROL_INTERVAL_SECONDS / seconds_per_step)))
        self._next_control_step = self._control_clock[1] + self._control_spacing
        if nonfinite:
            raise TrainingDivergedError(
                f"The training loss became NaN or infinite at step {NONFINITE_BASE - nonfinite} (epoch "
                f"{session.progress_tracker.epoch}) on at least one rank, so every rank stops here. "
                "Lower trainer.learning_rate, keep trainer.gradient_clipping.clipglobalnorm set, and "
                "check the data for NaN or extreme values." + self._last_good_checkpoint_hint(session)
            )
        if stop and self.stop_reason is None:
            self.stop_reason = signals.STOP_REASONS[stop]

    # ---- the loop -------------------------------------------------------------------------
    def train(
        self,
        training_set: Dataset,
        validation_set: Optional[Dataset] = None,
        test_set: Optional[Dataset] = None,
        save_path: str = "model",
        return_state_dict: bool = False,
    ):
        """Train; returns (model or state dict, train_metrics, validation_metrics, test_metrics).

        The metrics are the histories {feature: {metric: [[epoch, step, value], ...]}}.
        """
        self.stop_reason = None
        # Accumulated training metrics are read only by evaluations that report them; a full pass
        # (evaluate_training_set) or no evaluation at all would throw them away unread.
        self._accumulate_metrics = not (self.config.evaluate_training_set or self.config.skip_all_evaluation)
        self._control_spacing = self.CONTROL_FIRST_STEPS
        self._next_control_step = self._optimizer_steps
        training_set, validation_set, test_set = (
            None if ds is None else self.model.prepare_dataset(ds) for ds in (training_set, validation_set, test_set))
        self._signals.install()
        try:
            session = self._setup_session(training_set, validation_set, test_set, save_path)
            self.callback(lambda c: c.on_trainer_train_setup(self, save_path, self.is_coordinator()), coordinator_only=False)
            try:
                self._run(session)
            finally:
                for w in session.writers.values():
                    w.close()
                if session.progress_bar is not None:
                    session.progress_bar.close()
                # Every checkpoint on disk before train() returns, raises or the process exits.
                self._wait_for_checkpoints(session)
            self.callback(lambda c: c.on_trainer_train_teardown(self, session.progress_tracker, save_path, self.is_coordinator()), coordinator_only=False)
        finally:
            self._signals.uninstall()

        pt = self.last_progress_tracker = session.progress_tracker
        self.last_save_path = save_path
        if self.stop_reason is None:
            self._load_best(session)
        model = self.model
        if return_state_dict:
            model = {k: v.to(self.return_device) for k, v in self.model.state_dict().items()}
        return model, pt.train_metrics, pt.validation_metrics, pt.test_metrics

    def _setup_session(self, training_set, validation_set, test_set, save_path) -> TrainingSession:
        if self.is_coordinator():
            os.makedirs(save_path, exist_ok=True)
        # The uncompiled module: torch.compile's wrapper prefixes every state_dict key with _orig_mod.
        checkpoint = self.distributed.create_checkpoint_handle(self.model, self.optimizer, self.scheduler, scaler=self.scaler)
        manager = CheckpointManager(checkpoint, os.path.join(save_path, TRAINING_CHECKPOINTS_DIR), self.distributed,
                                    background=self.config.checkpoint_in_background)

        progress_tracker = None
        resumed = False
        if self.resume:
            progress_tracker = self.resume_training_progress_tracker(save_path, manager)
            resumed = progress_tracker is not None
        if self.batch_size is None:
            if resumed and progress_tracker.batch_size:
                self.batch_size = progress_tracker.batch_size
            else:
                self.batch_size = self.tune_batch_size(training_set)
        if progress_tracker is None:
            progress_tracker = self.get_new_progress_tracker()
        if not progress_tracker.batch_size:
            progress_tracker.batch_size = self.batch_size
        if self.eval_batch_size is None:
            if self.config.eval_batch_size == "auto":
                self.eval_batch_size = self.tune_batch_size(training_set, for_evaluation=True)
            else:
                self.eval_batch_size = self.batch_size

        batcher = training_set.initialize_batcher(progress_tracker.batch_size, self.config.should_shuffle,
                                                  self.random_seed, self.distributed, training=True)
        steps_per_epoch = batcher.steps_per_epoch
        if steps_per_epoch == 0:
            from hvd_trainer.errors import DataError

            raise DataError(f"The training set {training_set.name} is empty, so there is nothing to train on. "
                            "Check the dataset path and the split configuration.")
        total_steps = self.config.train_steps or self.config.epochs * steps_per_epoch
        steps_per_checkpoint = min(self._steps_per_checkpoint(steps_per_epoch), total_steps)
        self.scheduler.reset(steps_per_checkpoint, total_steps)

        writers = create_summary_writers(os.path.join(save_path, "logs"), self.is_coordinator() and not self.skip_save_log)
        session = TrainingSession(
            save_path=save_path, progress_tracker=progress_tracker, batcher=batcher, checkpoint_manager=manager,
            writers=writers, training_set=training_set, validation_set=validation_set, test_set=test_set,
            total_steps=total_steps, steps_per_checkpoint=steps_per_checkpoint, steps_per_epoch=steps_per_epoch,
            early_stopping_steps=steps_per_checkpoint * self.config.early_stop,
            next_evaluation=(progress_tracker.steps // steps_per_checkpoint + 1) * steps_per_checkpoint,
            # Rows over all ranks: one rank's shard may be empty while another's is not.
            has_validation=validation_set is not None and validation_set.global_size(self.distributed) > 0,
        )
        if resumed:
            self.resume_weights_and_optimizer(session)
            self.callback(lambda c: c.on_resume_training(self.is_coordinator()))
        else:
            # Horovod: every rank starts from rank 0's weights and optimizer state.
            self.distributed.sync_model(self.model)
            self.distributed.sync_optimizer(self.optimizer)
        progress_tracker.world_size = self.distributed.size()

        if self.is_coordinator():
            logger.info("Training on %d rank(s): %d step(s) per epoch per rank, batch size %d per rank "
                        "(%d per step overall), %d total step(s), evaluation every %d step(s), learning rate %.3g.",
                        self.distributed.size(), steps_per_epoch, progress_tracker.batch_size,
                        progress_tracker.batch_size * self.distributed.size(), total_steps,
                        steps_per_checkpoint, self.base_learning_rate)
            from tqdm import tqdm

            session.progress_bar = tqdm(total=total_steps, initial=progress_tracker.steps, desc="Training",
                                        unit="step", file=sys.stderr, dynamic_ncols=True,
                                        # In a log file (a batch job's output), a line every 30 s.
                                        mininterval=0.5 if sys.stderr.isatty() else 30)
        return session

    @staticmethod
    def _wait_for_checkpoints(session: TrainingSession) -> None:
        if sys.exc_info()[0] is None:
            session.checkpoint_manager.wait()
            return
        try:  # already failing: keep that error, but do not abandon a write in flight
            session.checkpoint_manager.wait()
        except CheckpointError as e:
            logger.error("%s", e)

    def get_new_progress_tracker(self) -> ProgressTracker:
        best = initial_best(self.validation_metric)
        return ProgressTracker(batch_size=self.batch_size or 0, learning_rate=self.base_learning_rate,
                               best_eval_metric_value=best, world_size=self.distributed.size())

    def _run(self, session: TrainingSession) -> None:
        pt = session.progress_tracker
        should_stop = False
        while pt.steps < session.total_steps and not should_stop:
            batcher = session.batcher
            batcher.set_epoch(pt.epoch, pt.batch_size)
            if batcher.steps_per_epoch != session.steps_per_epoch:
                self._rescale_schedule(session)
            if pt.epoch_step:
                batcher.skip(pt.epoch_step)
            else:
                self.model.reset_metrics()
            self.dist_model.train()
            self.callback(lambda c: c.on_epoch_start(self, pt, session.save_path), coordinator_only=False)
            should_stop = self._train_loop(session)
            if pt.epoch_step == 0:
                self.callback(lambda c: c.on_epoch_end(self, pt, session.save_path), coordinator_only=False)
            if self.stop_reason is not None:
                break
        if self.stop_reason is None and pt.steps != session.next_evaluation - session.steps_per_checkpoint and not should_stop:
            # The last steps did not end on an evaluation boundary: evaluate and save them too.
            self._evaluate_and_checkpoint(session)

    def _rescale_schedule(self, session: TrainingSession) -> None:
        """The batch size grew on a plateau: fewer steps per epoch, same number of epochs."""
        pt, spe = session.progress_tracker, session.batcher.steps_per_epoch
        if not self.config.train_steps:
            session.total_steps = pt.steps + (self.config.epochs - pt.epoch) * spe - pt.epoch_step
        session.steps_per_epoch = spe
        session.steps_per_checkpoint = min(self._steps_per_checkpoint(spe), max(1, session.total_steps))
        session.early_stopping_steps = session.steps_per_checkpoint * self.config.early_stop
        self.scheduler.reset(session.steps_per_checkpoint, session.total_steps)
        if session.progress_bar is not None:
            session.progress_bar.total = session.total_steps
        # Evaluations stay on multiples of the new spacing, counted from here.
        session.next_evaluation = pt.steps + session.steps_per_checkpoint

    def _steps_per_checkpoint(self, steps_per_epoch: int) -> int:
        if self.config.steps_per_checkpoint:
            return min(self.config.steps_per_checkpoint, steps_per_epoch)
        if self.config.checkpoints_per_epoch:
            return max(1, steps_per_epoch // self.config.checkpoints_per_epoch)
        return steps_per_epoch

    def _train_loop(self, session: TrainingSession) -> bool:
        """Up to one epoch of batches; returns True when training must stop (early stop).

        This is the hot path: at a small model's ~1 ms per step, every attribute lookup and
        callback dispatch shows up in the benchmarks, so per-step invariants are hoisted.
        """
        pt, batcher = session.progress_tracker, session.batcher
        model, device, save_path = self.model, self.device, session.save_path
        # Per-step hooks run on every rank; only callbacks that define them cost a call.
        batch_start, batch_end = overriding(self.callbacks, "on_batch_start"), overriding(self.callbacks, "on_batch_end")
        accumulation = self.gradient_accumulation_steps
        writer = session.writers["training"]
        progress_bar = session.progress_bar
        log_steps = progress_bar is not None and not isinstance(writer, NullSummaryWriter)
        batch_idx = 0
        self._control_clock = None
        self.distributed.zero_grad(self.optimizer)
        while not batcher.last_batch() and pt.steps < session.total_steps:
            for cb in batch_start:
                cb.on_batch_start(self, pt, save_path)
            batch = batcher.next_batch()
            batch_idx += 1
            epoch_done = batcher.last_batch()
            should_step = epoch_done or batch_idx % accumulation == 0
            inputs = model.input_tensors(batch, device)
            targets = model.target_tensors(batch, device)

            # Also agree on the step before an evaluation or the end, so that nothing is evaluated
            # or saved after a NaN, and a late signal is not lost.
            agree = should_step and (self._optimizer_steps >= self._next_control_step
                                     or pt.steps + 1 >= min(session.next_evaluation, session.total_steps))
            self._control_due = agree
            loss, all_losses = self.train_step(inputs, targets, should_step=should_step)
            if should_step:
                self._optimizer_steps += 1
                self.scheduler.step()
            pt.steps += 1
            pt.epoch_step += 1
            if epoch_done:
                # Count the epoch as done now, so a checkpoint taken at this step resumes in the next one.
                pt.epoch, pt.epoch_step = pt.epoch + 1, 0
            loss_value = loss.item()
            if not math.isfinite(loss_value) and self._nonfinite_step is None:
                self._nonfinite_step = pt.steps
            if agree:
                self._collect_control(session)
            session.last_loss, session.last_losses = loss, all_losses
            if progress_bar is not None:
                if log_steps:
                    write_step_summary(writer, loss_value, all_losses, pt.steps, self.scheduler.get_last_lr()[0])
                progress_bar.update(1)
            for cb in batch_end:
                cb.on_batch_end(self, pt, save_path, sync_step=should_step)

            if self.stop_reason is not None:
                self._save_on_stop(session)
                return True
            if pt.steps >= session.next_evaluation:
                session.next_evaluation += session.steps_per_checkpoint
                if self._evaluate_and_checkpoint(session):
                    return True
                self._control_clock = None
        return False

    def _evaluate_and_checkpoint(self, session: TrainingSession) -> bool:
        should_break = self.run_evaluation(session)
        self._save_progress(session)
        self.callback(lambda c: c.on_checkpoint(self, session.progress_tracker))
        return should_break

    def _save_progress(self, session: TrainingSession) -> None:
        pt = session.progress_tracker
        pt.learning_rate = self.scheduler.get_last_lr()[0]
        pt.elapsed_time += time.time() - session.start_time
        session.start_time = time.time()
        if self.skip_save_progress:
            return
        pt.checkpoint_to_step[str(pt.checkpoint_number)] = pt.steps
        pt.checkpoint_to_epoch[str(pt.checkpoint_number)] = pt.epoch
        session.checkpoint_manager.save(progress=pt.to_dict())
        if self.is_coordinator():
            session.checkpoint_manager.save_text(session.progress_path, pt.to_json())

    def _save_on_stop(self, session: TrainingSession) -> None:
        pt = session.progress_tracker
        self._save_progress(session)
        session.checkpoint_manager.wait()  # stopping: the checkpoint must be on disk before we say so
        if self.is_coordinator():
            logger.info("Stopped at step %d (%s); checkpoint saved in %s.", pt.steps, self.stop_reason,
                        session.checkpoint_manager.directory)

    # ---- evaluation -----------------------------------------------------------------------
    def evaluation(self, dataset: Dataset, dataset_name: str, progress_tracker: ProgressTracker,
                   batch_size: int) -> Dict[str, Dict[str, float]]:
        """Metrics of the model on `dataset`, over every rank's shard; appended to the history."""
        from hvd_trainer.predictor import Predictor

        metrics = Predictor(self.dist_model, self.model, batch_size, self.distributed, self.device).batch_evaluation(dataset)
        progress_tracker.append_metrics(dataset_name, metrics)
        return metrics

    def run_evaluation(self, session: TrainingSession) -> bool:
        """Evaluate on training (accumulated), validation and test; returns whether to stop."""
        pt = session.progress_tracker
        start = time.time()
        self.callback(lambda c: c.on_eval_start(self, pt, session.save_path))
        pt.checkpoint_number += 1
        eval_batch_size = max(self.eval_batch_size or 1, pt.batch_size)
        tables: Dict[str, Dict[str, Dict[str, float]]] = {}
        if self.config.skip_all_evaluation:
            metrics = {}
        elif self.config.evaluate_training_set:
            metrics = self.evaluation(session.training_set, "training", pt, eval_batch_size)
        else:
            metrics = self.model.get_metrics(self.distributed)
            pt.append_metrics("training", metrics)
        tables["training"] = metrics
        write_eval_summary(session.writers["training"], metrics, pt.steps)

        if session.validation_set is not None and not self.config.skip_all_evaluation:
            self.callback(lambda c: c.on_validation_start(self, pt, session.save_path))
            tables["validation"] = self.evaluation(session.validation_set, "validation", pt, eval_batch_size)
            write_eval_summary(session.writers["validation"], tables["validation"], pt.steps)
            self.callback(lambda c: c.on_validation_end(self, pt, session.save_path))
        if session.test_set is not None and not self.config.skip_all_evaluation:
            self.callback(lambda c: c.on_test_start(self, pt, session.save_path))
            tables["test"] = self.evaluation(session.test_set, "test", pt, eval_batch_size)
            write_eval_summary(session.writers["test"], tables["test"], pt.steps)
            self.callback(lambda c: c.on_test_end(self, pt, session.save_path))
        self.model.reset_metrics()  # training metrics of the next evaluation cover the steps since this one
        self.dist_model.train()

        if self.is_coordinator():
            logger.info("\nEvaluation at step %d, epoch %d (%.2f s):\n%s", pt.steps, pt.epoch,
                        time.time() - start, format_metrics_table(tables))
        self._check_weights_finite(session)

        if session.has_validation and not self.config.skip_all_evaluation:
            should_break = self.check_progress_on_validation(session)
        else:
            # No validation set: the newest model is the best one.
            self._save_best(session)
            should_break = self._agree_early_stop(session, self._callbacks_want_stop(pt))
        self.callback(lambda c: c.on_eval_end(self, pt, session.save_path))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return should_break

    @staticmethod
    def _last_good_checkpoint_hint(session: TrainingSession) -> str:
        latest = session.checkpoint_manager.latest_path
        if os.path.exists(latest):
            return f" The last good checkpoint is {latest}; --resume continues from it."
        return " No checkpoint had been saved yet."

    def _check_weights_finite(self, session: TrainingSession) -> None:
        # Weights are identical on every rank (same averaged gradients), so each rank
        # reaches the same verdict without a collective.
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingDivergedError(
                    f"The model weight {name} became NaN or infinite by step {session.progress_tracker.steps}. "
                    "Lower trainer.learning_rate or set trainer.gradient_clipping." + self._last_good_checkpoint_hint(session)
                )

    def check_progress_on_validation(self, session: TrainingSession) -> bool:
        """Track the best validation value, save the best model, and decide on early stopping."""
        pt = session.progress_tracker
        field_name, metric = self.validation_field, self.validation_metric
        value = pt.last_metric("validation", field_name, metric)
        if value is None:
            available = {f: sorted(m) for f, m in pt.validation_metrics.items()}
            raise ConfigError(
                f"trainer.validation_field/validation_metric is {field_name}/{metric}, but the validation "
                f"metrics are {available}. Choose a feature and metric from that list."
            )
        if improves(value, pt.best_eval_metric_value, higher_is_better(metric)):
            previous = pt.best_eval_metric_value
            pt.best_eval_metric_value = value
            pt.best_eval_metric_steps = pt.steps
            pt.best_eval_metric_epoch = pt.epoch
            pt.best_eval_metric_checkpoint_number = pt.checkpoint_number
            pt.last_improvement_steps = pt.steps
            for split, store in (("training", pt.best_eval_train_metrics), ("validation", pt.best_eval_validation_metrics),
                                 ("test", pt.best_eval_test_metrics)):
                store.clear()
                store.update({f: {m: series[-1][2] for m, series in ms.items()} for f, ms in pt.metrics_of(split).items()})
            if self.is_coordinator():
                logger.info("Validation %s on %s improved from %s to %.6g; model saved.", metric, field_name,
                            "none" if math.isinf(previous) else f"{previous:.6g}", value)
            self._save_best(session)
        steps_since = pt.steps - pt.last_improvement_steps
        if self.is_coordinator() and steps_since > 0:
            logger.info("Last improvement of validation %s on %s was %d step(s) (%d evaluation(s)) ago.",
                        metric, field_name, steps_since, steps_since // max(1, session.steps_per_checkpoint))
        self.scheduler.eval_step(pt, field_name)
        if self.config.increase_batch_size_on_plateau > 0:
            self.increase_batch_size(pt, field_name)

        local_stop = False
        if self.config.early_stop > 0 and steps_since >= session.early_stopping_steps:
            local_stop = True
            if self.is_coordinator():
                logger.info("Early stopping: validation %s on %s has not improved for %d evaluation(s) "
                            "(best %.6g at step %d).", metric, field_name, self.config.early_stop,
                            pt.best_eval_metric_value, pt.best_eval_metric_steps)
        local_stop = local_stop or self._callbacks_want_stop(pt)
        return self._agree_early_stop(session, local_stop)

    def _callbacks_want_stop(self, pt: ProgressTracker) -> bool:
        return any(cb.should_early_stop(self, pt, self.is_coordinator()) for cb in self.callbacks)

    def _agree_early_stop(self, session: TrainingSession, local_stop: bool) -> bool:
        # One rank's vote (a callback on that rank, say) stops every rank at this same step.
        stop = self.distributed.any_rank(local_stop)
        if stop and not local_stop and self.is_coordinator():
            logger.info("Early stopping requested by another rank.")
        return stop

    def _save_best(self, session: TrainingSession) -> None:
        if self.skip_save_model:
            return
        session.checkpoint_manager.save_best(progress_steps=session.progress_tracker.steps)
        if self.is_coordinator():
            session.checkpoint_manager.save_file(session.weights_path, self.model.state_dict())
        self.callback(lambda c: c.on_save_best_checkpoint(self, session.progress_tracker, session.save_path))

    def _load_best(self, session: TrainingSession) -> None:
        """After training, every rank continues with the best model (rank 0's copy, broadcast)."""
        if self.skip_save_model:
            return
        best = session.checkpoint_manager.best_path
        session.checkpoint_manager.wait()
        exists = self.distributed.broadcast_object(os.path.exists(best) if self.is_coordinator() else None,
                                                   name="hvd_trainer.best_exists")
        if not exists:
            return
        if self.is_coordinator():
            state = load_checkpoint_file(best, "cpu")
            self.model.load_state_dict(state["model"])
        self.distributed.sync_model(self.model)

    def increase_batch_size(self, pt: ProgressTracker, validation_field: str) -> None:
        """Grow the batch size after a plateau of the watched metric (Ludwig's rules)."""
        cfg = self.config
        if pt.num_increases_batch_size >= cfg.increase_batch_size_on_plateau or pt.batch_size >= cfg.increase_batch_size_on_plateau_max:
            return
        split, metric = cfg.increase_batch_size_eval_split, cfg.increase_batch_size_eval_metric
        value = pt.last_metric(split, validation_field, metric)
        if value is None:
            raise ConfigError(f"trainer.increase_batch_size_eval_metric {metric!r} on split {split!r} is not among "
                              f"the metrics of {validation_field}; choose one the model reports (e.g. loss).")
        state, act = plateau_update(
            value,
            Plateau(pt.best_increase_batch_size_eval_metric, pt.last_increase_batch_size_eval_metric_improvement,
                    pt.last_increase_batch_size),
            cfg.increase_batch_size_on_plateau_patience, higher_is_better(metric))
        (pt.best_increase_batch_size_eval_metric, pt.last_increase_batch_size_eval_metric_improvement,
         pt.last_increase_batch_size) = state
        if act:
            old = pt.batch_size
            pt.batch_size = min(int(old * cfg.increase_batch_size_on_plateau_rate), cfg.increase_batch_size_on_plateau_max)
            pt.num_increases_batch_size += 1
            pt.last_increase_batch_size_steps = pt.steps
            if self.is_coordinator():
                logger.info("Batch size %d -> %d: %s %s has not improved for %d evaluation(s).", old, pt.batch_size,
                            split, metric, cfg.increase_batch_size_on_plateau_patience)

    # ---- resume ---------------------------------------------------------------------------
    @staticmethod
    def resume_files_exist(training_progress_tracker_path: str, training_checkpoint_path: str) -> bool:
        missing = [p for p in (training_progress_tracker_path, os.path.join(training_checkpoint_path, LATEST))
                   if not os.path.exists(p)]
        if missing:
            logger.warning("Could not find %s; the model will be trained from scratch.", ", ".join(missing))
            return False
        return True

    def resume_training_progress_tracker(self, save_path: str, manager: CheckpointManager) -> Optional[ProgressTracker]:
        """Coordinator reads the latest checkpoint and broadcasts its tracker (or the error).

        The tracker inside latest.ckpt is used rather than training_progress.json: both are
        written at the same step, but only the checkpoint is guaranteed to match the weights
        if the process died between the two writes.
        """
        payload = None
        if self.is_coordinator():
            progress_path = os.path.join(save_path, TRAINING_PROGRESS_FILE)
            if not self.resume_files_exist(progress_path, manager.directory):
                payload = {"tracker": None}
            else:
                try:
                    self._resume_state = manager.read_latest()
                    payload = {"tracker": self._resume_state["meta"].get("progress")}
                except CheckpointError as e:
                    payload = {"error": str(e)}
        payload = self.distributed.broadcast_object(payload, name="hvd_trainer.resume_tracker")
        if "error" in payload:
            raise CheckpointError(payload["error"])
        if payload["tracker"] is None:
            return None
        pt = ProgressTracker.load(payload["tracker"])
        if self.is_coordinator():
            logger.info("Resuming from step %d (epoch %d, batch %d of the epoch).", pt.steps, pt.epoch, pt.epoch_step)
        return pt

    def resume_weights_and_optimizer(self, session: TrainingSession) -> None:
        """Rank 0 applies the checkpoint it read; weights, optimizer, scheduler and RNG go to every rank."""
        pt = session.progress_tracker
        error, rng_states = None, None
        if self.is_coordinator():
            try:
                meta = session.checkpoint_manager.checkpoint.apply(self._resume_state, session.checkpoint_manager.latest_path)
                rng_states = meta.get("rng_states")
            except CheckpointError as e:
                error = str(e)
            self._resume_state = None
        payload = self.distributed.broadcast_object(
            {"error": error, "scheduler": self.scheduler.state_dict(), "rng": rng_states} if self.is_coordinator() else None,
            name="hvd_trainer.resume_state")
        if payload["error"]:
            raise CheckpointError(payload["error"])
        self.distributed.sync_model(self.model)
        self.distributed.sync_optimizer(self.optimizer)
        self.scheduler.load_state_dict(payload["scheduler"])
        size = self.distributed.size()
        if pt.world_size != size:
            # Another world size: re-shard, re-scale the LR, and map the epoch position by samples seen.
            old_bs = pt.batch_size * pt.world_size
            new_step = math.ceil(pt.epoch_step * old_bs / (pt.batch_size * size))
            if self.is_coordinator():
                logger.info("Resuming a run trained on %d rank(s) with %d rank(s): data re-sharded, learning rate "
                            "re-scaled from %.3g to %.3g, epoch position %d -> %d step(s).", pt.world_size, size,
                            self.scheduler.base_lr, self.base_learning_rate, pt.epoch_step, new_step)
            pt.epoch_step = min(new_step, session.batcher.steps_per_epoch)
            if not self.config.train_steps:
                # Steps at the old size measure other amounts of data: count the epochs that remain.
                remaining = (self.config.epochs - pt.epoch) * session.batcher.steps_per_epoch - pt.epoch_step
                session.total_steps = pt.steps + max(0, remaining)
            self.scheduler.base_lr = self.base_learning_rate
            self.scheduler.reset(session.steps_per_checkpoint, session.total_steps)
        elif payload["rng"] is not None and len(payload["rng"]) == size:
            set_rng_state(payload["rng"][self.distributed.rank()])

    # ---- batch size tuning ------------------------------------------------------------------
    def tune_batch_size(self, training_set: Dataset, for_evaluation: bool = False) -> int:
        from hvd_trainer.batch_size_tuner import tune_batch_size

        return tune_batch_size(self, training_set, for_evaluation=for_evaluation)

    # ---- online training ------------------------------------------------------------------
    def train_online(self, dataset: Dataset) -> BaseModel:
        """One pass over `dataset` with the current optimizer state (no evaluation, no checkpoints)."""
        self.dist_model.train()
        batch_size = self.batch_size or MAX_CPU_BATCH_SIZE
        batcher = dataset.initialize_batcher(batch_size, self.config.should_shuffle, self.random_seed,
                                             self.distributed, training=True)
        self.distributed.zero_grad(self.optimizer)
        while not batcher.last_batch():
            batch = batcher.next_batch()
            self.train_step(self.model.input_tensors(batch, self.device), self.model.target_tensors(batch, self.device))
        return self.model


class RemoteTrainer(Trainer):
    """A Trainer whose train() results come back from rank 0 only, with weights on the CPU."""

    def __init__(self, gpus=None, gpu_memory_limit=None, allow_parallel_threads: bool = True, **kwargs):
        super().__init__(**kwargs)
        # Only rank 0's results travel back to the caller, which saves copying every rank's.
        self.train = self.distributed.return_first(self.train)
        self.train_online = self.distributed.return_first(self.train_online)

    @property
    def return_device(self):
        return "cpu"
