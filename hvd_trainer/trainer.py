"""Trainer: Ludwig's ECD training loop on a DistributedStrategy.

The loop, in short: shard the data, scale the LR by world size, broadcast rank 0's weights and
optimizer state, then per batch forward -> backward (gradients averaged by the strategy) -> clip
-> step; every `steps_per_checkpoint` steps evaluate on all ranks' data, save a checkpoint, and
decide together whether to stop. Each decision is asked of a part: `Control` (signals and NaN,
agreed between ranks), `Schedule` (the run's length), `best` (best model, early stopping),
`resume` (find -> broadcast -> load), `TrainStep`, `Evaluator`, `Checkpointer`, the tuner.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from hvd_trainer import best, console, signals
from hvd_trainer.batch_size_tuner import MAX_CPU_BATCH_SIZE, tune_model_batch_size
from hvd_trainer.callbacks import Callback, overriding
from hvd_trainer.checkpoint import remove_temp_files
from hvd_trainer.checkpointer import Checkpointer
from hvd_trainer.config import TrainerConfig
from hvd_trainer.control import Control
from hvd_trainer.data.dataset import Dataset
from hvd_trainer.elastic_training import ElasticTraining
from hvd_trainer.distributed import DistributedStrategy, init_dist_strategy
from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.evaluation import Evaluator, check_weights_finite
from hvd_trainer.lr_scheduler import LRScheduler
from hvd_trainer.ludwig_trainer_api import LudwigTrainerAPI
from hvd_trainer.models.base import COMBINED, BaseModel
from hvd_trainer.metric_checks import check_metric_references
from hvd_trainer.metrics import LOSS
from hvd_trainer.mlflow_callback import configured_callbacks
from hvd_trainer.optimizers import create_optimizer
from hvd_trainer.plateau import increase_batch_size_on_plateau
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.resume import Resumed, restore_schedule, resume
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.session import TrainingSession
from hvd_trainer.step import TrainStep
from hvd_trainer.summary import NullSummaryWriter, create_summary_writers, write_step_summary

logger = logging.getLogger(__name__)

class Trainer(LudwigTrainerAPI):
    """Trains a BaseModel with the `trainer:` config on a DistributedStrategy."""

    # ---- core config -----------------------------------------------------------------------
    config: TrainerConfig
    resume: bool
    skip_save_model: bool
    skip_save_progress: bool
    skip_save_log: bool
    random_seed: int
    callbacks: List[Callback]
    # ---- components --------------------------------------------------------------------------
    distributed: DistributedStrategy
    device: torch.device
    model: BaseModel  # the model as built: its state_dict is what checkpoints hold
    compiled_model: torch.nn.Module  # what forward passes run through: torch.compile's wrapper, or `model`
    optimizer: torch.optim.Optimizer  # wrapped by the strategy (Horovod's DistributedOptimizer)
    scheduler: LRScheduler
    step_fn: TrainStep  # one batch through forward, backward and the optimizer (step.py)
    scaler: Optional[torch.amp.GradScaler]  # step_fn's, for mixed precision; None in fp32
    control: Control  # agreement between ranks on stop signals and NaN losses (control.py)
    evaluator: Evaluator  # metrics of every split over all ranks (evaluation.py)
    # ---- runtime state -----------------------------------------------------------------------
    base_learning_rate: float
    batch_size: Optional[int]
    eval_batch_size: Optional[int]
    gradient_accumulation_steps: int
    stop_reason: Optional[str]  # why the last train() stopped early (a signal), or None
    last_progress_tracker: Optional[ProgressTracker]
    last_save_path: Optional[str]

    def __init__(self, config: Union[TrainerConfig, Dict[str, Any], None], model: BaseModel, resume: bool = False,
                 skip_save_model: bool = False, skip_save_progress: bool = False, skip_save_log: bool = False,
                 callbacks: Optional[List[Callback]] = None, random_seed: int = 42,
                 distributed: Optional[DistributedStrategy] = None, device: Optional[str] = None, **kwargs):
        if kwargs:
            raise TypeError(f"Trainer got unexpected arguments: {', '.join(sorted(kwargs))}.")
        self.config = config if isinstance(config, TrainerConfig) else TrainerConfig.from_dict(config)
        self.resume, self.random_seed, self.callbacks = resume, random_seed, [*(callbacks or []), *configured_callbacks(self.config)]
        self.skip_save_model, self.skip_save_progress, self.skip_save_log = skip_save_model, skip_save_progress, skip_save_log

        self.distributed = distributed or init_dist_strategy("auto")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.compiled_model = torch.compile(self.model) if self.config.compile else self.model
        check_metric_references(self.config, self.model.output_features, self.validation_field)
        self.control = Control(self.distributed, signals.StopSignals(on_quit=remove_temp_files))

        # Horovod: the LR grows with the world size as the gradient reduction asks (see the strategy).
        self.base_learning_rate = self.config.learning_rate * self.distributed.learning_rate_multiplier(
            self.config.learning_rate_scaling_resolved())
        self.batch_size = self.config.batch_size if isinstance(self.config.batch_size, int) else None
        self.eval_batch_size = self.config.eval_batch_size if isinstance(self.config.eval_batch_size, int) else None
        self.gradient_accumulation_steps = self.config.gradient_accumulation_steps_resolved()
        if self.gradient_accumulation_steps > 1 and not self.distributed.allow_gradient_accumulation():
            raise ConfigError(f"trainer.gradient_accumulation_steps is {self.gradient_accumulation_steps}, which the "
                              f"{self.distributed.name} strategy does not support; set it to 1.")
        self.stop_reason = None
        self.last_progress_tracker, self.last_save_path = None, None
        self.prepare()

    # ---- setup ----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the optimizer (wrapped by the strategy), the LR scheduler and the train step."""
        optimizer = create_optimizer(self.model, self.config.optimizer, self.base_learning_rate,
                                     self.config.use_mixed_precision)
        self.optimizer = self.distributed.wrap_optimizer(optimizer, self.compiled_model, self.gradient_accumulation_steps)
        self.scheduler = LRScheduler(self.config.learning_rate_scheduler, self.optimizer, base_lr=self.base_learning_rate)
        self.step_fn = TrainStep(self.config, self.model, self.compiled_model, self.optimizer, self.distributed, self.device)
        self.scaler = self.step_fn.scaler
        self.evaluator = Evaluator(self.model, self.compiled_model, self.distributed, self.device, self.config)

    @property
    def validation_field(self) -> str:
        outputs = self.model.output_features
        return self.config.validation_field or (COMBINED if len(outputs) > 1 else next(iter(outputs)))

    @property
    def validation_metric(self) -> str:
        return self.config.validation_metric or LOSS

    def is_coordinator(self) -> bool:
        return self.distributed.rank() == 0

    def callback(self, fn: Callable[[Callback], Any], coordinator_only: bool = True) -> None:
        """fn(callback) on the coordinator (Ludwig's contract), or on every rank when not coordinator_only or
        when the callback asks for it (`every_rank = True`). An error is every rank's at the next agreement."""
        coordinator = self.is_coordinator()
        for cb in self.callbacks:
            if coordinator or not coordinator_only or getattr(cb, "every_rank", False):
                with self.control.errors:
                    fn(cb)

    def _step_hooks(self, hook: str) -> List[Callback]:
        """The callbacks whose per-step `hook` runs on this rank (only those that define it cost a call)."""
        coordinator = self.is_coordinator()
        return [cb for cb in overriding(self.callbacks, hook) if coordinator or getattr(cb, "every_rank", False)]

    # ---- one step -------------------------------------------------------------------------
    def train_step(self, inputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor], should_step: bool = True,
                   control: Optional[Control] = None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Forward, backward and (when should_step) the optimizer update for one batch (see step.py)."""
        return self.step_fn(inputs, targets, should_step, control)

    # ---- the loop -------------------------------------------------------------------------
    def train(self, training_set: Dataset, validation_set: Optional[Dataset] = None, test_set: Optional[Dataset] = None,
              save_path: str = "model", return_state_dict: bool = False):
        """Train; returns (model or state dict, and the training, validation and test metric histories,
        each {feature: {metric: [[epoch, step, value], ...]}})."""
        self.stop_reason = None
        # Accumulated training metrics are read only by evaluations that report them; a full pass
        # (evaluate_training_set) or no evaluation at all would throw them away unread.
        self.step_fn.accumulate_metrics = not (self.config.evaluate_training_set or self.config.skip_all_evaluation)
        self.control.start()
        training_set, validation_set, test_set = (
            None if ds is None else self.model.prepare_dataset(self.model.check_columns(ds))
            for ds in (training_set, validation_set, test_set))
        self.control.signals.install()
        try:
            session = self._setup_session(training_set, validation_set, test_set, save_path)
            try:
                self.callback(lambda c: c.on_trainer_train_setup(self, save_path, self.is_coordinator()),
                              coordinator_only=False)
                self.distributed.run_elastic(lambda: self._run(session), ElasticTraining.attach(self, session))
                session.checkpointer.finish()
            finally:
                # Every checkpoint on disk before train() returns, raises or the process exits.
                session.close()
            self.callback(lambda c: c.on_trainer_train_teardown(self, session.progress_tracker, save_path,
                                                                self.is_coordinator()), coordinator_only=False)
            self.control.errors.check()  # a teardown hook that failed on one rank
        finally:
            self.control.signals.uninstall()

        pt = self.last_progress_tracker = session.progress_tracker
        self.last_save_path = save_path
        if self.stop_reason is None:
            session.checkpointer.load_best(self.model)
        model = {k: v.to(self.return_device) for k, v in self.model.state_dict().items()} if return_state_dict else self.model
        return model, pt.train_metrics, pt.validation_metrics, pt.test_metrics

    def _setup_session(self, training_set, validation_set, test_set, save_path) -> TrainingSession:
        layout = RunLayout.of_model_dir(save_path)
        checkpointer = Checkpointer.for_run(layout, self.distributed, self.control.errors, self.model,
                                            self.optimizer, self.scheduler, self.scaler,
                                            self.config.checkpoint_in_background, self.skip_save_model,
                                            self.skip_save_progress)
        joined = self.distributed.elastic_joined()  # joining a running elastic job: no collective before its sync
        if joined:
            self.batch_size, self.eval_batch_size = joined["batch_size"], joined["eval_batch_size"]
        resumed = resume(checkpointer.manager, checkpointer.progress_path, self.distributed, self.model,
                         self.optimizer, self.scheduler) if self.resume and not joined else None
        checkpointer.has_latest = resumed is not None
        pt = self._choose_batch_sizes(training_set, resumed)
        batcher = training_set.initialize_batcher(pt.batch_size, self.config.should_shuffle, self.random_seed,
                                                  self.distributed, training=True)
        if batcher.steps_per_epoch == 0:
            raise DataError(f"The training set {training_set.name} is empty, so there is nothing to train on. "
                            "Check the dataset path and the split configuration.")
        pt, schedule = restore_schedule(resumed, pt, self.scheduler, self.config, batcher.steps_per_epoch,
                                        self.distributed, self.base_learning_rate)
        if resumed:
            self.callback(lambda c: c.on_resume_training(self.is_coordinator()))
        elif not joined:
            # Horovod: every rank starts from rank 0's weights and optimizer state.
            self.distributed.sync_model(self.model)
            self.distributed.sync_optimizer(self.optimizer)
        pt.world_size = self.distributed.size()
        # Opened last: nothing after this can fail before train() closes them.
        writers = create_summary_writers(layout.logs_dir, self.is_coordinator() and not self.skip_save_log)
        session = TrainingSession(
            save_path=save_path, progress_tracker=pt, batcher=batcher, checkpointer=checkpointer, writers=writers,
            training_set=training_set, validation_set=validation_set, test_set=test_set, schedule=schedule,
            next_evaluation=schedule.next_evaluation_after(pt.steps),
            # Rows over all ranks: one rank's shard may be empty while another's is not.
            has_validation=validation_set is not None and validation_set.global_size(self.distributed) > 0,
        )
        if self.is_coordinator():
            session.announce(self.distributed.size(), self.base_learning_rate)
        return session

    def _choose_batch_sizes(self, training_set: Dataset, resumed: Optional[Resumed]) -> ProgressTracker:
        """The training and evaluation batch sizes (the resumed run's, the config's or tuned); the tracker."""
        if self.batch_size is None:
            resumed_size = resumed.progress.batch_size if resumed else 0
            self.batch_size = resumed_size or self.tune_batch_size(training_set)
        pt = resumed.progress if resumed else self.get_new_progress_tracker()
        if not pt.batch_size:
            pt.batch_size = self.batch_size
        if self.eval_batch_size is None:
            self.eval_batch_size = (self.tune_batch_size(training_set, for_evaluation=True)
                                    if self.config.eval_batch_size == "auto" else self.batch_size)
        return pt

    def get_new_progress_tracker(self) -> ProgressTracker:
        return ProgressTracker(batch_size=self.batch_size or 0, learning_rate=self.base_learning_rate,
                               best_eval_metric_value=best.initial_best(self.validation_metric),
                               world_size=self.distributed.size())

    def _run(self, session: TrainingSession) -> None:
        session.elastic.enter()  # elastic training: (re)started in a world that may have changed
        pt = session.progress_tracker
        should_stop = False
        while pt.steps < session.schedule.total_steps and not should_stop:
            batcher = session.batcher
            batcher.set_epoch(pt.epoch, pt.batch_size, pt.epoch_offset)
            if batcher.steps_per_epoch != session.schedule.batches_per_epoch:
                session.rescale_schedule(self.config, self.scheduler)
            if pt.epoch_step or pt.epoch_offset:
                batcher.skip(pt.epoch_step)
            else:
                self.model.reset_metrics()
            self.compiled_model.train()
            self.callback(lambda c: c.on_epoch_start(self, pt, session.save_path))
            should_stop = self._train_loop(session)
            if pt.epoch_step == 0:
                self.callback(lambda c: c.on_epoch_end(self, pt, session.save_path))
            if self.stop_reason is not None:
                break
        last_evaluated = session.next_evaluation - session.schedule.steps_per_evaluation
        if self.stop_reason is None and pt.steps != last_evaluated and not should_stop:
            # The last steps did not end on an evaluation boundary: evaluate and save them too.
            self._evaluate_and_checkpoint(session)

    def _train_loop(self, session: TrainingSession) -> bool:
        """Up to one epoch of batches; returns True when training must stop.

        This is the hot path: at a small model's ~1 ms per step, every attribute lookup and
        callback dispatch shows up in the benchmarks, so per-step invariants are hoisted.
        """
        pt, batcher, control, schedule = session.progress_tracker, session.batcher, self.control, session.schedule
        model, device, save_path = self.model, self.device, session.save_path
        batch_start, batch_end, errors = self._step_hooks("on_batch_start"), self._step_hooks("on_batch_end"), control.errors
        accumulation, progress_bar, writer = self.gradient_accumulation_steps, session.progress_bar, session.writers["training"]
        log_steps = progress_bar is not None and not isinstance(writer, NullSummaryWriter)
        batch_idx = 0
        control.pause()
        self.distributed.zero_grad(self.optimizer)
        while not batcher.last_batch() and pt.steps < schedule.total_steps:
            if batch_start:
                with errors:
                    for cb in batch_start:
                        cb.on_batch_start(self, pt, save_path)
            batch = batcher.next_batch()
            batch_idx += 1
            epoch_done = batcher.last_batch()
            should_step = epoch_done or batch_idx % accumulation == 0
            agree = should_step and control.due(pt.steps + 1 >= min(session.next_evaluation, schedule.total_steps))
            loss, all_losses = self.train_step(model.input_tensors(batch, device), model.target_tensors(batch, device),
                                               should_step, control if agree else None)
            pt.epoch_step += 1
            loss_value = loss.item()
            control.note_loss(loss_value, pt.steps + 1)
            if should_step:
                # Steps, the LR schedule and evaluations count optimizer steps (see schedule.py).
                control.stepped()
                self.scheduler.step()
                pt.steps += 1
                if epoch_done:
                    # Count the epoch as done now, so a checkpoint taken at this step resumes in the next one.
                    pt.epoch, pt.epoch_step, pt.epoch_offset = pt.epoch + 1, 0, 0
                if agree:  # what the ranks agreed: an error on a NaN anywhere, or a stop at a signal
                    decision = control.collect()
                    decision.raise_if_diverged(pt.epoch, session.checkpointer.last_good_hint())
                    self.stop_reason = self.stop_reason or decision.stop_reason
                if progress_bar is not None:
                    if log_steps:
                        write_step_summary(writer, loss_value, all_losses, pt.steps, self.scheduler.get_last_lr()[0])
                    progress_bar.update(1)
            if batch_end:
                with errors:
                    for cb in batch_end:
                        cb.on_batch_end(self, pt, save_path, sync_step=should_step)
            if not should_step:
                continue  # a checkpoint never falls between the batches of one accumulated step
            if self.stop_reason is not None:
                self._save_on_stop(session)
                return True
            if session.elastic.evaluation_due(pt.steps, session.next_evaluation):  # else maybe an elastic commit
                session.next_evaluation += session.schedule.steps_per_evaluation
                if self._evaluate_and_checkpoint(session):
                    return True
                control.pause()
        return False

    def _evaluate_and_checkpoint(self, session: TrainingSession) -> bool:
        should_break = self.run_evaluation(session)
        session.save_progress(self.scheduler.get_last_lr()[0])
        self.callback(lambda c: c.on_checkpoint(self, session.progress_tracker))
        session.elastic.commit()
        return should_break

    def _save_on_stop(self, session: TrainingSession) -> None:
        self.distributed.average_batch_norm_statistics(self.model)
        session.save_progress(self.scheduler.get_last_lr()[0])
        session.checkpointer.finish()  # stopping: the checkpoint must be on disk before we say so
        if self.skip_save_progress and self.stop_reason == "preempt":
            # Nothing to resume from: asking to be requeued would start the run over, again and again.
            self.stop_reason = signals.PREEMPTED_UNSAVED
        if self.is_coordinator():
            saved = ("no checkpoint saved (skip_save_progress), so no requeue is asked for" if self.skip_save_progress
                     else f"checkpoint saved in {session.checkpointer.manager.directory}")
            logger.info("Stopped at step %d (%s); %s.", session.progress_tracker.steps, self.stop_reason, saved)

    # ---- evaluation -----------------------------------------------------------------------
    def evaluation(self, dataset: Dataset, dataset_name: str, progress_tracker: ProgressTracker,
                   batch_size: int) -> Dict[str, Dict[str, float]]:
        """Metrics of the model on `dataset`, over every rank's shard; appended to the history."""
        return self.evaluator.evaluate(dataset, dataset_name, progress_tracker, batch_size)

    def run_evaluation(self, session: TrainingSession) -> bool:
        """Evaluate on training (accumulated), validation and test; returns whether to stop."""
        pt, save_path = session.progress_tracker, session.save_path
        self.callback(lambda c: c.on_eval_start(self, pt, save_path))
        # One model evaluated and saved: BatchNorm statistics averaged over ranks first.
        self.distributed.average_batch_norm_statistics(self.model)
        pt.checkpoint_number += 1
        tables = self.evaluator.run(
            pt, session.training_set, {"validation": session.validation_set, "test": session.test_set},
            session.writers, max(self.eval_batch_size or 1, pt.batch_size),
            notify=lambda hook: self.callback(lambda c: getattr(c, hook)(self, pt, save_path)))
        session.last_evaluation = tables
        check_weights_finite(self.model, pt.steps, session.checkpointer.last_good_hint())
        if session.has_validation and not self.config.skip_all_evaluation:
            should_break = self.check_progress_on_validation(session)
        else:
            # No validation set: the newest model is the best one.
            if self.is_coordinator():
                console.report_evaluation(session, self.validation_field, self.validation_metric)
            self._save_best(session)
            should_break = self.control.vote(self._callbacks_want_stop(pt))
        self.callback(lambda c: c.on_eval_end(self, pt, save_path))
        return should_break

    def check_progress_on_validation(self, session: TrainingSession) -> bool:
        """Track the best validation value, save the best model, and decide on early stopping."""
        pt, field_name, metric = session.progress_tracker, self.validation_field, self.validation_metric
        verdict = best.judge(pt, field_name, metric, self.config.early_stop, session.schedule.early_stopping_steps)
        if self.is_coordinator():
            console.report_evaluation(session, field_name, metric, verdict)
        if verdict.improved:
            best.record_best(pt, verdict.value)
            self._save_best(session)
        self.scheduler.eval_step(pt, field_name)
        if self.config.increase_batch_size_on_plateau > 0:
            self.increase_batch_size(pt, field_name)
        # One rank's vote (a callback on that rank, say) stops every rank at this same step.
        stop = self.control.vote(verdict.should_stop or self._callbacks_want_stop(pt))
        if stop and not verdict.should_stop and self.is_coordinator():
            logger.info("Early stopping requested by another rank.")
        return stop

    def _callbacks_want_stop(self, pt: ProgressTracker) -> bool:
        return any(cb.should_early_stop(self, pt, self.is_coordinator()) for cb in self.callbacks)

    def _save_best(self, session: TrainingSession) -> None:
        if session.checkpointer.save_best(session.progress_tracker, self.model):
            self.callback(lambda c: c.on_save_best_checkpoint(self, session.progress_tracker, session.save_path))

    def increase_batch_size(self, pt: ProgressTracker, validation_field: str) -> None:
        """Grow the batch size after a plateau of the watched metric (Ludwig's rules, in plateau.py)."""
        old = increase_batch_size_on_plateau(pt, self.config, validation_field)
        if old is not None and self.is_coordinator():
            logger.info("Batch size %d -> %d: %s %s has not improved for %d evaluation(s).", old, pt.batch_size,
                        self.config.increase_batch_size_eval_split, self.config.increase_batch_size_eval_metric,
                        self.config.increase_batch_size_on_plateau_patience)

    # ---- batch size tuning ------------------------------------------------------------------
    def tune_batch_size(self, training_set: Dataset, for_evaluation: bool = False) -> int:
        """The batch size with the best throughput, the same on every rank (see batch_size_tuner)."""
        return tune_model_batch_size(self.model, self.compiled_model, self.optimizer, self.scheduler, self.train_step,
                                     self.distributed, self.device, self.config.max_batch_size, training_set,
                                     for_evaluation)

    # ---- online training ------------------------------------------------------------------
    def train_online(self, dataset: Dataset) -> BaseModel:
        """One pass over `dataset` with the current optimizer state (no evaluation, no checkpoints)."""
        self.compiled_model.train()
        batcher = dataset.initialize_batcher(self.batch_size or MAX_CPU_BATCH_SIZE, self.config.should_shuffle,
                                             self.random_seed, self.distributed, training=True)
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
