"""LR schedule: each curve against its closed form (written out here independently), reduce on
plateau with Ludwig's counters, and resume continuing the same curve."""
import io
import logging
import math
from typing import List

import pytest
import torch

from hvd_trainer.config import LRSchedulerConfig
from hvd_trainer.errors import ConfigError
from hvd_trainer.lr_scheduler import LRScheduler, learning_rate_at, warmup_steps_for
from hvd_trainer.progress import ProgressTracker

BASE_LR = 0.1


def make_optimizer(lr: float = BASE_LR) -> torch.optim.Optimizer:
    # Two param groups: the scheduler must set every one of them.
    return torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                            {"params": [torch.zeros(1, requires_grad=True)]}], lr=lr)


def lrs_used(scheduler: LRScheduler, n: int) -> List[float]:
    """The lr each of n optimizer steps trains with, stepping the scheduler as the trainer does."""
    used = []
    for _ in range(n):
        lrs = scheduler.get_last_lr()
        assert len(set(lrs)) == 1, "every param group gets the same lr"
        used.append(lrs[0])
        scheduler.optimizer.step()
        scheduler.step()
    return used


def test_warmup_fraction_then_linear_decay_follows_the_formula():
    config = LRSchedulerConfig(warmup_fraction=0.1, decay="linear")
    scheduler = LRScheduler(config, make_optimizer(), total_steps=100)
    expected = [BASE_LR * (s + 1) / 10 if s < 10 else BASE_LR * (100 - s) / 90 for s in range(100)]
    assert lrs_used(scheduler, 100) == pytest.approx(expected, rel=1e-12)
    assert scheduler.warmup_steps == 10


def test_the_first_training_step_already_uses_the_warmup_value():
    scheduler = LRScheduler(LRSchedulerConfig(warmup_fraction=0.25), make_optimizer(), total_steps=8)
    assert scheduler.get_last_lr() == pytest.approx([BASE_LR / 2, BASE_LR / 2])


def test_warmup_reaches_base_lr_at_its_last_step_and_no_decay_stays_there():
    scheduler = LRScheduler(LRSchedulerConfig(warmup_fraction=0.5), make_optimizer(), total_steps=8)
    assert lrs_used(scheduler, 8) == pytest.approx([BASE_LR * k / 4 for k in (1, 2, 3, 4)] + [BASE_LR] * 4)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_follows_the_formula(staircase):
    config = LRSchedulerConfig(decay="exponential", decay_rate=0.5, decay_steps=4, staircase=staircase,
                               warmup_fraction=0.1)
    scheduler = LRScheduler(config, make_optimizer(), total_steps=30)
    warmup = 3  # round(0.1 * 30)
    expected = []
    for s in range(30):
        if s < warmup:
            expected.append(BASE_LR * (s + 1) / warmup)
        else:
            p = s - warmup
            expected.append(BASE_LR * 0.5 ** (math.floor(p / 4) if staircase else p / 4))
    assert lrs_used(scheduler, 30) == pytest.approx(expected, rel=1e-12)


def test_staircase_holds_the_lr_flat_within_each_decay_period():
    config = LRSchedulerConfig(decay="exponential", decay_rate=0.5, decay_steps=4, staircase=True)
    used = lrs_used(LRScheduler(config, make_optimizer(), total_steps=12), 12)
    assert used == pytest.approx([BASE_LR] * 4 + [BASE_LR / 2] * 4 + [BASE_LR / 4] * 4)


@pytest.mark.parametrize("t_mult", [1, 2])
def test_cosine_with_restarts_matches_torch_after_warmup(t_mult):
    # warmup_evaluations counts evaluation periods: 1 period of 3 steps.
    config = LRSchedulerConfig(decay="cosine", t_0=5, t_mult=t_mult, eta_min=0.01, warmup_evaluations=1)
    scheduler = LRScheduler(config, make_optimizer(), steps_per_evaluation=3, total_steps=60)
    assert scheduler.warmup_steps == 3
    used = lrs_used(scheduler, 60)

    reference_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=BASE_LR)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(reference_opt, T_0=5, T_mult=t_mult, eta_min=0.01)
    expected = [BASE_LR / 3, 2 * BASE_LR / 3, BASE_LR]
    for _ in range(60 - 3):
        expected.append(reference_opt.param_groups[0]["lr"])
        reference_opt.step()
        reference.step()
    assert used[:3] == pytest.approx(expected[:3], rel=1e-12)
    assert used[3:] == pytest.approx(expected[3:], rel=1e-12, abs=1e-15)
    # The restarts happened: the lr is back at base_lr at each cycle start (5, then 5*t_mult later).
    assert used[3 + 5] == pytest.approx(BASE_LR)
    assert used[3 + 5 + 5 * t_mult] == pytest.approx(BASE_LR)


def test_cosine_without_t_0_is_one_half_cosine_over_the_steps_after_warmup():
    config = LRSchedulerConfig(decay="cosine", warmup_fraction=0.2)
    used = lrs_used(LRScheduler(config, make_optimizer(), total_steps=50), 50)
    expected = [BASE_LR * (s + 1) / 10 if s < 10 else BASE_LR * (1 + math.cos(math.pi * (s - 10) / 40)) / 2
                for s in range(50)]
    assert used == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert all(a > b for a, b in zip(used[10:], used[11:])), "no restart within the run"


def test_warmup_evaluations_use_steps_per_checkpoint_and_fraction_uses_total_steps():
    assert warmup_steps_for(LRSchedulerConfig(warmup_evaluations=2), steps_per_evaluation=7, total_steps=1000) == 14
    assert warmup_steps_for(LRSchedulerConfig(warmup_fraction=0.05), steps_per_evaluation=7, total_steps=1000) == 50
    assert warmup_steps_for(LRSchedulerConfig(), steps_per_evaluation=7, total_steps=1000) == 0


def test_linear_decay_never_goes_below_zero_past_total_steps():
    config = LRSchedulerConfig(decay="linear")
    assert learning_rate_at(120, BASE_LR, config, warmup_steps=0, total_steps=100) == 0.0


def test_reset_keeps_the_step_count_and_bends_the_curve_to_the_new_length():
    scheduler = LRScheduler(LRSchedulerConfig(decay="linear"), make_optimizer(), total_steps=100)
    lrs_used(scheduler, 50)
    scheduler.reset(steps_per_evaluation=10, total_steps=200)
    assert scheduler.step_count == 50
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 150 / 200)


# ---- reduce on plateau ------------------------------------------------------------------------

def evaluate(scheduler: LRScheduler, tracker: ProgressTracker, metric: str, value: float) -> None:
    """One evaluation as the trainer does it: record the metric, then let the scheduler look."""
    tracker.steps += 10
    tracker.append_metrics("training", {"combined": {metric: value}})
    scheduler.eval_step(tracker, "combined")


def plateau_scheduler(**overrides) -> LRScheduler:
    config = LRSchedulerConfig(reduce_on_plateau=2, reduce_on_plateau_patience=3, reduce_on_plateau_rate=0.5,
                               **overrides)
    return LRScheduler(config, make_optimizer(), total_steps=1000)


def test_reduce_on_plateau_waits_for_patience_evaluations_without_improvement(caplog):
    scheduler, tracker = plateau_scheduler(), ProgressTracker()
    for loss in (1.0, 0.9, 0.8):  # improving: never reduce
        evaluate(scheduler, tracker, "loss", loss)
    assert scheduler.get_last_lr()[0] == BASE_LR
    assert tracker.best_reduce_learning_rate_eval_metric == 0.8

    evaluate(scheduler, tracker, "loss", 0.85)
    evaluate(scheduler, tracker, "loss", 0.8)  # equal to the best is not an improvement
    assert scheduler.get_last_lr()[0] == BASE_LR, "only 2 of 3 patience evaluations so far"
    with caplog.at_level(logging.INFO, logger="hvd_trainer.lr_scheduler"):
        evaluate(scheduler, tracker, "loss", 0.9)
    assert scheduler.get_last_lr() == pytest.approx([BASE_LR * 0.5] * 2)
    assert tracker.num_reductions_learning_rate == 1
    assert tracker.last_learning_rate_reduction == 0
    assert tracker.last_learning_rate_reduction_steps == tracker.steps == 60
    assert "loss" in caplog.text and "0.9" in caplog.text and "0.8" in caplog.text and "0.05" in caplog.text

    # The next reduction needs another `patience` evaluations since this one.
    evaluate(scheduler, tracker, "loss", 0.9)
    evaluate(scheduler, tracker, "loss", 0.9)
    assert tracker.num_reductions_learning_rate == 1
    evaluate(scheduler, tracker, "loss", 0.9)
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 0.25)

    # The cap (reduce_on_plateau=2) is reached: no further reductions however long the plateau.
    for _ in range(10):
        evaluate(scheduler, tracker, "loss", 0.9)
    assert tracker.num_reductions_learning_rate == 2
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 0.25)


def test_an_improvement_restarts_the_patience_count():
    scheduler, tracker = plateau_scheduler(), ProgressTracker()
    for loss in (1.0, 1.0, 1.0, 0.5, 1.0, 1.0):
        evaluate(scheduler, tracker, "loss", loss)
    assert tracker.num_reductions_learning_rate == 0
    evaluate(scheduler, tracker, "loss", 1.0)
    assert tracker.num_reductions_learning_rate == 1


def test_reduce_on_plateau_treats_higher_accuracy_as_improvement():
    scheduler, tracker = plateau_scheduler(reduce_eval_metric="accuracy"), ProgressTracker()
    for accuracy in (0.5, 0.6, 0.7, 0.8, 0.9):
        evaluate(scheduler, tracker, "accuracy", accuracy)
    assert tracker.num_reductions_learning_rate == 0
    assert tracker.best_reduce_learning_rate_eval_metric == 0.9
    for accuracy in (0.85, 0.9, 0.7):
        evaluate(scheduler, tracker, "accuracy", accuracy)
    assert tracker.num_reductions_learning_rate == 1
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 0.5)


def test_the_plateau_factor_multiplies_the_scheduled_lr():
    scheduler = plateau_scheduler(decay="linear")
    tracker = ProgressTracker()
    lrs_used(scheduler, 100)
    for _ in range(4):
        evaluate(scheduler, tracker, "loss", 1.0)
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 900 / 1000 * 0.5)
    lrs_used(scheduler, 100)
    assert scheduler.get_last_lr()[0] == pytest.approx(BASE_LR * 800 / 1000 * 0.5)


def test_a_missing_metric_names_the_keys_to_change_and_what_exists():
    scheduler, tracker = plateau_scheduler(reduce_eval_metric="accuracy", reduce_eval_split="validation"), ProgressTracker()
    tracker.append_metrics("validation", {"combined": {"loss": 1.0}, "label": {"loss": 1.0, "roc_auc": 0.5}})
    with pytest.raises(ConfigError) as err:
        scheduler.eval_step(tracker, "combined")
    message = str(err.value)
    for needed in ("reduce_eval_split", "reduce_eval_metric", "accuracy", "validation", "combined.loss", "label.roc_auc"):
        assert needed in message


def test_a_missing_feature_is_a_config_error_too():
    scheduler, tracker = plateau_scheduler(), ProgressTracker()
    tracker.append_metrics("training", {"combined": {"loss": 1.0}})
    with pytest.raises(ConfigError, match="no_such_feature"):
        scheduler.eval_step(tracker, "no_such_feature")


def test_without_reduce_on_plateau_eval_step_reads_nothing():
    scheduler = LRScheduler(LRSchedulerConfig(), make_optimizer(), total_steps=10)
    scheduler.eval_step(ProgressTracker(), "combined")  # empty history, yet no error
    assert scheduler.get_last_lr()[0] == BASE_LR


# ---- resume -----------------------------------------------------------------------------------

def test_state_dict_round_trip_mid_schedule_continues_the_same_curve_bit_for_bit():
    config = LRSchedulerConfig(decay="cosine", t_0=17, t_mult=2, eta_min=0.001, warmup_fraction=0.1,
                               reduce_on_plateau=1, reduce_on_plateau_patience=1, reduce_on_plateau_rate=0.3)
    original = LRScheduler(config, make_optimizer(), steps_per_evaluation=10, total_steps=200)
    tracker = ProgressTracker()
    lrs_used(original, 37)
    evaluate(original, tracker, "loss", 1.0)
    evaluate(original, tracker, "loss", 1.0)  # one reduction, so the plateau factor is in the state
    assert original.plateau_factor == 0.3

    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    # A fresh process: another initial lr in the optimizer and no lengths known yet.
    resumed = LRScheduler(config, make_optimizer(lr=123.0))
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == original.get_last_lr()
    assert lrs_used(resumed, 163) == lrs_used(original, 163)  # exact equality, not approx
    assert resumed.step_count == original.step_count == 200


def test_state_dict_holds_only_numbers():
    state = LRScheduler(LRSchedulerConfig(), make_optimizer(), total_steps=10).state_dict()
    assert set(state) == {"step_count", "plateau_factor", "base_lr", "warmup_steps", "total_steps"}
    assert all(isinstance(v, (int, float)) for v in state.values())
