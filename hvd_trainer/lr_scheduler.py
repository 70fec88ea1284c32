"""Learning-rate schedule: warmup, then decay (linear, exponential or cosine with restarts), times
a factor that shrinks when a watched metric stops improving (Ludwig's reduce on plateau).

The schedule is a pure function of the optimizer step, `learning_rate_at`, so a reader can check
it against the formulas and a resumed run lands on exactly the same curve. `LRScheduler` only
keeps the step counter and the plateau factor and writes the result into the optimizer. Nothing
here communicates: every rank sees the same step count and the same (synchronised) metrics, so
every rank computes the same learning rate.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch

from hvd_trainer.config import LRSchedulerConfig
from hvd_trainer.errors import ConfigError
from hvd_trainer.features import higher_is_better
from hvd_trainer.plateau import Plateau, plateau_update

if TYPE_CHECKING:  # only for hints; the scheduler needs nothing from the module at run time
    from hvd_trainer.progress import ProgressTracker

logger = logging.getLogger(__name__)


def learning_rate_at(step: int, base_lr: float, config: LRSchedulerConfig, warmup_steps: int, total_steps: int) -> float:
    """The learning rate used by optimizer step `step` (0-based), before any plateau reduction."""
    # 1) Linear warmup. The (step + 1) makes the first step already move (lr > 0) and the last
    #    warmup step use exactly base_lr, so the ramp joins the decay without a jump.
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    # 2) No decay: constant after warmup.
    if config.decay is None:
        return base_lr
    # Decays are counted from the end of warmup, so warmup does not eat into them.
    p = step - warmup_steps
    # 3) Linear decay from base_lr at the end of warmup to 0 at total_steps (clamped at 0 if the
    #    run goes longer, e.g. after a batch size change).
    if config.decay == "linear":
        return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    # 4) Exponential decay: one factor of decay_rate every decay_steps steps, smoothly or, with
    #    staircase, in whole jumps.
    if config.decay == "exponential":
        exponent = p // config.decay_steps if config.staircase else p / config.decay_steps
        return base_lr * config.decay_rate**exponent
    # 5) Cosine annealing with warm restarts (torch's CosineAnnealingWarmRestarts): the first cycle
    #    lasts t_0 steps (default: all steps after warmup, i.e. a single half cosine), each later
    #    one t_mult times longer. t_cur is the position inside the current cycle of length t_i.
    if config.decay == "cosine":
        t_cur, t_i = _cosine_cycle_position(p, config.t_0 or max(1, total_steps - warmup_steps), config.t_mult)
        return config.eta_min + (base_lr - config.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
    raise ConfigError(
        f"trainer.learning_rate_scheduler.decay is '{config.decay}'; use null, linear, exponential or cosine."
    )


def _cosine_cycle_position(p: int, t_0: int, t_mult: int) -> Tuple[int, int]:
    """(steps into the current cycle, current cycle length) after p steps of cosine decay.

    Integer arithmetic instead of torch's closed form with math.log, which can land on the wrong
    cycle at an exact boundary through rounding.
    """
    if t_mult == 1:
        return p % t_0, t_0
    t_cur, t_i = p, t_0
    while t_cur >= t_i:  # cycles grow geometrically, so this runs O(log p) times
        t_cur -= t_i
        t_i *= t_mult
    return t_cur, t_i


def warmup_steps_for(config: LRSchedulerConfig, steps_per_evaluation: int, total_steps: int) -> int:
    """Warmup length in optimizer steps, from evaluation periods or a fraction of the run."""
    if config.warmup_evaluations:
        return int(round(config.warmup_evaluations * steps_per_evaluation))
    return int(round(config.warmup_fraction * total_steps))


class LRScheduler:
    """Writes `learning_rate_at(step) * plateau_factor` into every param group of the optimizer.

    Invariant: after construction and after each `step()`, the optimizer holds the learning rate
    for optimizer step number `step_count`, i.e. the next one. The trainer calls `step()` right
    after each optimizer step, so step k trains with `learning_rate_at(k)`; `step_count` then
    equals the number of optimizer steps taken (the tracker's `steps`).
    """

    def __init__(
        self,
        config: LRSchedulerConfig,
        optimizer: torch.optim.Optimizer,
        steps_per_evaluation: int = 0,
        total_steps: int = 0,
        base_lr: Optional[float] = None,
    ):
        self.config = config
        self.optimizer = optimizer
        # Read before we overwrite it: the optimizer's lr is already scaled by world size.
        self.base_lr: float = float(optimizer.param_groups[0]["lr"] if base_lr is None else base_lr)
        self.step_count: int = 0
        self.plateau_factor: float = 1.0
        self.warmup_steps: int = 0
        self.total_steps: int = 0
        self.reset(steps_per_evaluation, total_steps)

    def reset(self, steps_per_evaluation: int, total_steps: int) -> None:
        """Re-derive warmup and decay lengths; the step count and plateau factor carry on.

        Called once the trainer knows the run's length, and again when the batch size changes
        it, so the curve bends to the new length instead of starting over.
        """
        self.total_steps = int(total_steps)
        self.warmup_steps = warmup_steps_for(self.config, steps_per_evaluation, self.total_steps)
        self._apply()

    def step(self) -> None:
        """Advance one optimizer step and set the learning rate for the next one."""
        self.step_count += 1
        self._apply()

    def current_lr(self) -> float:
        """The learning rate for optimizer step `step_count`, plateau reductions included."""
        if self.total_steps <= 0:
            # Length not known yet (the trainer calls reset() before training): without it linear
            # decay would read as "already finished" and give 0.
            return self.base_lr * self.plateau_factor
        lr = learning_rate_at(self.step_count, self.base_lr, self.config, self.warmup_steps, self.total_steps)
        return lr * self.plateau_factor

    def _apply(self) -> None:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def get_last_lr(self) -> List[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def eval_step(self, progress_tracker: ProgressTracker, validation_field: str) -> None:
        """After an evaluation: reduce the learning rate if the watched metric has plateaued.

        Ludwig's rule: reduce once `reduce_on_plateau_patience` evaluations have passed both
        without improvement and since the last reduction (so reductions are spaced at least
        `patience` evaluations apart), at most `reduce_on_plateau` times. The counters live in
        the progress tracker so that they survive a resume.
        """
        cfg = self.config
        pt = progress_tracker
        if cfg.reduce_on_plateau <= 0 or pt.num_reductions_learning_rate >= cfg.reduce_on_plateau:
            return
        value = self._watched_metric(pt, validation_field)
        state, act = plateau_update(
            value,
            Plateau(pt.best_reduce_learning_rate_eval_metric, pt.last_reduce_learning_rate_eval_metric_improvement,
                    pt.last_learning_rate_reduction),
            cfg.reduce_on_plateau_patience, higher_is_better(cfg.reduce_eval_metric))
        (pt.best_reduce_learning_rate_eval_metric, pt.last_reduce_learning_rate_eval_metric_improvement,
         pt.last_learning_rate_reduction) = state
        if act:
            self.plateau_factor *= cfg.reduce_on_plateau_rate
            pt.num_reductions_learning_rate += 1
            pt.last_learning_rate_reduction_steps = pt.steps
            self._apply()
            logger.info(
                "Reducing the learning rate: %s %s %s is %.6g, no better than the best %.6g for %d "
                "evaluations; the learning rate is now %.6g (reduction %d of at most %d).",
                cfg.reduce_eval_split, validation_field, cfg.reduce_eval_metric, value, pt.best_reduce_learning_rate_eval_metric,
                pt.last_reduce_learning_rate_eval_metric_improvement, self.current_lr(),
                pt.num_reductions_learning_rate, cfg.reduce_on_plateau,
            )

    def _watched_metric(self, pt: ProgressTracker, validation_field: str) -> float:
        """The latest value of the metric reduce-on-plateau watches, or a ConfigError naming the keys."""
        split, metric = self.config.reduce_eval_split, self.config.reduce_eval_metric
        try:
            history = pt.metrics_of(split)
        except KeyError:
            raise ConfigError(
                f"trainer.learning_rate_scheduler.reduce_eval_split is '{split}'; use training, validation or test."
            ) from None
        series = history.get(validation_field, {}).get(metric)
        if series:
            return float(series[-1][2])
        available = sorted(f"{feature}.{name}" for feature, metrics in history.items() for name in metrics)
        raise ConfigError(
            f"Reduce on plateau watches metric '{metric}' of '{validation_field}' on the '{split}' split, "
            f"but that split has no such metric history (it has: {', '.join(available) or 'nothing'}). "
            "Set trainer.learning_rate_scheduler.reduce_eval_split / reduce_eval_metric to a split and "
            "metric that is computed, or trainer.validation_field to another output feature."
        )

    def state_dict(self) -> Dict[str, Any]:
        # Plain numbers only, so torch.load(weights_only=True) can read the checkpoint.
        return {
            "step_count": self.step_count,
            "plateau_factor": self.plateau_factor,
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_factor = float(state["plateau_factor"])
        self.base_lr = float(state["base_lr"])
        self.warmup_steps = int(state["warmup_steps"])
        self.total_steps = int(state["total_steps"])
        # The optimizer's own state_dict also holds an lr; overwrite it so both agree.
        self._apply()

