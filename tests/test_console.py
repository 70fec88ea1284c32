"""Rank 0's training console: one line per evaluation, and tables without a repeated `combined`."""
from hvd_trainer.console import evaluation_line
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.summary import format_metrics_table

TABLES = {
    "training": {"label": {"loss": 0.5, "accuracy": 0.8}, "combined": {"loss": 0.5}},
    "validation": {"label": {"loss": 0.25, "accuracy": 0.9}, "combined": {"loss": 0.25}},
    "test": {"label": {"loss": 0.3, "accuracy": 0.85}, "combined": {"loss": 0.3}},
}


def tracker(steps, epoch, best_value, best_step):
    pt = ProgressTracker()
    pt.steps, pt.epoch, pt.best_eval_metric_value, pt.best_eval_metric_steps = steps, epoch, best_value, best_step
    return pt


def test_the_line_shows_every_validation_metric_and_the_watched_one_elsewhere():
    line = evaluation_line(tracker(40, 4, 0.2, 30), 400, TABLES, "label", "loss", improved=False)
    assert line == ("step 40/400 epoch 4 | train loss 0.5000 | val loss 0.2500 accuracy 0.9000 | test loss 0.3000 "
                    "| best 0.2000 at step 30")


def test_the_line_says_when_the_model_improved_and_nothing_when_nothing_was_judged():
    assert evaluation_line(tracker(10, 1, 0.0, 0), 400, TABLES, "label", "loss", improved=True).endswith(
        "| new best, saved")
    assert evaluation_line(tracker(10, 1, 0.0, 0), 400, {"training": TABLES["training"]}, "label", "loss") == (
        "step 10/400 epoch 1 | train loss 0.5000")


def test_one_output_gets_one_table_and_several_keep_combined():
    one = format_metrics_table(TABLES)
    assert one.count("│ label") == 1 and "combined" not in one
    several = {s: dict(t, other={"loss": 0.1}) for s, t in TABLES.items()}
    assert "│ combined" in format_metrics_table(several)
