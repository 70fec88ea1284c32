"""Elastic training, the trainer's side: what a commit keeps, and how the loop carries on in a new world.

The strategy (distributed/elastic.py) runs the loop inside Horovod's elastic run and calls back here:
`snapshot`/`apply` at a commit and a restore, `shared`/`receive` at a sync from rank 0, and `enter`
each time the loop (re)starts. `enter` is where a membership change is absorbed:

- the data: the epoch's position is a number of samples (`Batcher.samples_consumed`: in lockstep the
  world's first k batches cover the first k x batch x world entries of the epoch's order), so the
  rest of the epoch is dealt over the new world from there: no sample of the epoch is skipped and
  none is trained on twice (beyond the padding that evens out the ranks' last batches, as in a
  static run);
- the learning rate: rescaled to the new world size, the schedule re-derived from the samples
  that remain, so the run still ends after the same epochs with the same decay.

A static strategy calls `enter` once and never commits; `commit_due` then costs one comparison.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import threading
from typing import Any, Dict, Optional

from hvd_trainer.checkpoint import rng_state, set_rng_state
from hvd_trainer.commit_checkpoint import checkpoint_position, save_commit
from hvd_trainer.data.dataset import consumed_samples
from hvd_trainer.errors import CheckpointError, ConfigError
from hvd_trainer.run_layout import RunLayout
from hvd_trainer.schedule import Schedule
from hvd_trainer.session import TrainingSession, progress_bar
from hvd_trainer.summary import NullSummaryWriter, create_summary_writers

logger = logging.getLogger(__name__)


class ElasticTraining:
    """One train() call's elastic state (a no-op participant for a static strategy); `trainer` is the Trainer."""

    def __init__(self, trainer: Any, session: TrainingSession):
        self.trainer, self.session = trainer, session
        self.elastic = trainer.distributed.is_elastic()
        self.commit_steps = trainer.distributed.elastic_commit_steps
        #: The step of the commit this process last saved to disk (save_commit), and why the last try failed.
        self._saved_step: Optional[int] = None
        self._save_error: Optional[str] = None
        self._saving = threading.Lock()  # restore (main thread) and the watchdog (its own) may both save
        if self.elastic and session.training_set.sharded:
            raise ConfigError(
                "Elastic training needs every rank to hold the whole training set (a new world re-deals it), but "
                "this one is sharded (each rank read only its part of the file). Load it with shard=False.")

    @classmethod
    def attach(cls, trainer: Any, session: TrainingSession) -> "ElasticTraining":
        """A participant for `session`, kept as session.elastic (the loop calls it there)."""
        session.elastic = cls(trainer, session)
        return session.elastic

    # ---- the loop's calls -------------------------------------------------------------------------------
    def evaluation_due(self, steps: int, next_evaluation: int) -> bool:
        """Whether this step evaluates (and commits after its checkpoint); otherwise an elastic job commits
        every commit_steps steps here."""
        if steps >= next_evaluation:
            return True
        if self.elastic and steps % self.commit_steps == 0:
            self.trainer.distributed.elastic_commit()
        return False

    def commit(self) -> None:
        """The commit after an evaluation's checkpoint; TensorBoard's buffered events reach the disk with it,
        so that a lost rank 0 loses none of the curves a checkpoint already holds."""
        if self.elastic:
            for writer in self.session.writers.values():
                writer.flush()
            self.trainer.distributed.elastic_commit()

    def enter(self) -> None:
        """The loop (re)starts: carry on in the world as it is now (size and this rank's place in it)."""
        if not self.elastic:
            return
        t, s = self.trainer, self.session
        pt, size = s.progress_tracker, t.distributed.size()
        t.control.forget_pending()
        old_size, old_lr = pt.world_size, t.scheduler.get_last_lr()[0]
        if old_size != size:
            self._reshard(size)
        s.batcher = s.training_set.initialize_batcher(pt.batch_size, t.config.should_shuffle, t.random_seed,
                                                      t.distributed, training=True)
        s.batcher.set_epoch(pt.epoch, pt.batch_size, pt.epoch_offset)
        phase = s.schedule.evaluation_phase  # a resumed run's evaluations stay where they were (resume.py)
        s.schedule = dataclasses.replace(Schedule.of(t.config, s.batcher.steps_per_epoch, pt,
                                                     s.batcher.batches_from(pt.epoch_offset)), evaluation_phase=phase)
        t.scheduler.reset(s.schedule.steps_per_evaluation, s.schedule.total_steps)
        s.next_evaluation = self._next_evaluation(old_size != size)
        if t.is_coordinator():
            speak_as_coordinator()
        if t.is_coordinator() and isinstance(s.writers.get("training"), NullSummaryWriter) and not t.skip_save_log:
            # This rank became rank 0 (the old one was lost): it writes the run's logs from now on.
            s.writers = create_summary_writers(RunLayout.of_model_dir(s.save_path).logs_dir, True)
        if t.is_coordinator() and s.progress_bar is None:
            s.progress_bar = progress_bar(s.schedule.total_steps, pt.steps)
        elif s.progress_bar is not None:
            s.progress_bar.total, s.progress_bar.n = s.schedule.total_steps, pt.steps  # maybe rolled back
            s.progress_bar.refresh()
        if old_size != size and t.is_coordinator():
            logger.info("Elastic: world size %d -> %d at step %d, LR %.4g -> %.4g", old_size, size, pt.steps,
                        old_lr, t.scheduler.get_last_lr()[0])

    def _next_evaluation(self, resized: bool) -> int:
        """The same world: the evaluation the run was heading for. A new one: evaluations every
        steps_per_evaluation of the new size, from here, the first one at the latest at this epoch's end."""
        s, pt = self.session, self.session.progress_tracker
        if not resized:
            return s.schedule.next_evaluation_after(pt.steps)
        accumulation = self.trainer.gradient_accumulation_steps
        rest_of_epoch = -(-(s.batcher.batches_from(pt.epoch_offset) - pt.epoch_step) // accumulation)
        return pt.steps + (min(s.schedule.steps_per_evaluation, rest_of_epoch) if rest_of_epoch > 0
                           else s.schedule.steps_per_evaluation)

    def _reshard(self, size: int) -> None:
        """The epoch's position in samples, from here on dealt over `size` ranks; the LR for `size` ranks."""
        t, pt = self.trainer, self.session.progress_tracker
        pt.epoch_offset = consumed_samples(pt.epoch_offset, pt.epoch_step, pt.batch_size, pt.world_size,
                                           len(self.session.training_set))
        pt.epoch_step, pt.world_size = 0, size
        t.base_learning_rate = t.config.learning_rate * t.distributed.learning_rate_multiplier(
            t.config.learning_rate_scaling)
        t.scheduler.base_lr = t.base_learning_rate

    # ---- the state Horovod keeps (distributed/elastic.py's ElasticParticipant) ------------------------------
    def model(self):
        return self.trainer.model

    def snapshot(self) -> Dict[str, Any]:
        snap = dict(self.shared(), model=self.trainer.model.state_dict(), rng=rng_state())
        return copy.deepcopy(snap)  # one copy of everything: the live objects go on changing

    def apply(self, snapshot: Dict[str, Any]) -> None:
        self.trainer.model.load_state_dict(snapshot["model"])
        set_rng_state(snapshot["rng"])
        self.receive(copy.deepcopy(snapshot))

    def join_package(self) -> Dict[str, Any]:
        """The trainer's `elastic_join_info` (set by the train command: what it read and decided at the start)
        and the batch sizes, for a process that joins (distributed/elastic.py's greet)."""
        t = self.trainer
        return dict(getattr(t, "elastic_join_info", None) or {}, batch_size=self.session.progress_tracker.batch_size,
                    eval_batch_size=t.eval_batch_size)

    def shared(self) -> Dict[str, Any]:
        t = self.trainer
        return {"optimizer": t.optimizer.state_dict(), "scheduler": t.scheduler.state_dict(),
                "scaler": t.scaler.state_dict() if t.scaler is not None else None,
                "progress": self.session.progress_tracker, "optimizer_steps": t.control.optimizer_steps}

    def receive(self, shared: Dict[str, Any]) -> None:
        t = self.trainer
        # Horovod's DistributedOptimizer forgets gradient reductions in flight on load_state_dict.
        t.optimizer.load_state_dict(shared["optimizer"])
        t.distributed.zero_grad(t.optimizer)
        t.scheduler.load_state_dict(shared["scheduler"])
        if t.scaler is not None and shared["scaler"] is not None:
            t.scaler.load_state_dict(shared["scaler"])
        self.session.progress_tracker = copy.deepcopy(shared["progress"])
        t.control.optimizer_steps = shared["optimizer_steps"]

    # ---- the world lost (distributed/elastic.py: at a restore, and from the rendezvous watchdog) ---------------
    def save_commit(self, snapshot: Dict[str, Any]) -> None:
        """The commit as the run's latest checkpoint (commit_checkpoint.py), by this process alone; a failure is
        logged, not raised (the job carries on, or the watchdog's message says so)."""
        s, pt = self.session, snapshot["progress"]
        with self._saving:
            if (s.checkpointer.skip_save_progress or self._saved_step == pt.steps
                    or self.trainer.distributed.elastic_joined() is not None):  # joined, not yet synced: no commit
                return
            try:
                written = save_commit(s.checkpointer.manager, s.checkpointer.progress_path, snapshot, pt)
            except CheckpointError as e:
                self._save_error = str(e)
                logger.error("Elastic: the last commit (step %d) could not be saved: %s", pt.steps, e)
                return
            self._saved_step, self._save_error = pt.steps, None
            s.checkpointer.has_latest = True
        logger.info("Elastic: a process was lost; the last commit (step %d, epoch %d) %s %s, in case the job ends.",
                    pt.steps, pt.epoch, "is saved in" if written else "or a later checkpoint is already in",
                    s.checkpointer.manager.latest_path)

    def world_lost(self, waited_s: float, timeout_s: float, snapshot: Dict[str, Any]) -> None:
        """The rendezvous watchdog fired: horovodrun is about to end the job. The last commit saved (if not yet),
        then one paragraph on stderr (every survivor: the old rank 0 may be gone) with what to do."""
        self.save_commit(snapshot)
        s, pt = self.session, snapshot["progress"]
        root = (getattr(self.trainer, "elastic_join_info", None) or {}).get("run_root") \
            or RunLayout.of_model_dir(s.save_path).root
        latest = s.checkpointer.manager.latest_path
        on_disk = checkpoint_position(latest)  # the commit, or a checkpoint rank 0 finished after it
        if self._saved_step == pt.steps and on_disk is not None:
            saved = (f"The last commit (step {pt.steps}, epoch {pt.epoch}) is saved: --resume continues from step "
                     f"{on_disk[0]} (epoch {on_disk[1]}) in {latest}.")
        else:
            reason = (f" ({self._save_error})" if self._save_error
                      else " (skip_save_progress is set)" if s.checkpointer.skip_save_progress else "")
            saved = (f"The last commit (step {pt.steps}, epoch {pt.epoch}) could not be saved{reason}."
                     f"{s.checkpointer.last_good_hint()}")
        logger.error(
            "Elastic: fewer than --min-np processes have been available for %.0f s, and horovodrun ends the job when "
            "HOROVOD_ELASTIC_TIMEOUT (%.0f s) passes without them: this job is ending (unless enough hosts come back "
            "within seconds). %s Continue the run from there with --resume, under a fixed launcher, e.g. 'horovodrun "
            "-np 2 -H host1:1,host2:1 python -m hvd_trainer train --resume %s' (with the same --dataset), or under "
            "the same elastic horovodrun command with --resume %s added.", waited_s, timeout_s, saved, root, root)


def speak_as_coordinator() -> None:
    """This process became rank 0: the log level it was quieted from (commands/shared.py) comes back."""
    root = logging.getLogger()
    level = getattr(root, "hvd_trainer_coordinator_level", None)
    if level is not None:
        root.setLevel(level)
