"""run_on_coordinator: rank 0 does the work, every rank gets its result or the same error."""
from typing import Any, List

import pytest

from hvd_trainer.coordinator import run_on_coordinator
from hvd_trainer.distributed.base import LocalStrategy
from hvd_trainer.errors import CheckpointError, ConfigError
from hvd_trainer.rank_errors import RankFailedError, error_reported_by


class OtherRank(LocalStrategy):
    """Rank 1 of two: its broadcast_object hands back what rank 0 sent (`sent`), and records the call."""

    def __init__(self, sent: Any):
        self.sent = sent
        self.broadcasts: List[str] = []

    def rank(self) -> int:
        return 1

    def size(self) -> int:
        return 2

    def broadcast_object(self, obj: Any, name: str) -> Any:
        assert obj is None, "a rank other than 0 has nothing to send"
        self.broadcasts.append(name)
        return self.sent


class Coordinator(LocalStrategy):
    """Rank 0 of two: records what it broadcasts."""

    def __init__(self):
        self.sent: List[Any] = []

    def size(self) -> int:
        return 2

    def broadcast_object(self, obj: Any, name: str) -> Any:
        self.sent.append((name, obj))
        return obj


def _must_not_run():
    raise AssertionError("only rank 0 may run fn")


def test_rank_0_runs_fn_and_every_rank_gets_its_result():
    assert run_on_coordinator(LocalStrategy(), "test.value", lambda: {"a": 1}) == {"a": 1}
    other = OtherRank({"value": {"a": 1}})
    assert run_on_coordinator(other, "test.value", _must_not_run) == {"a": 1}
    assert other.broadcasts == ["test.value"]


def test_an_input_error_on_rank_0_is_the_same_error_on_the_other_ranks():
    coordinator = Coordinator()

    def fail():
        raise CheckpointError("The model weights w do not fit the model.")

    with pytest.raises(CheckpointError, match="do not fit") as raised:
        run_on_coordinator(coordinator, "test.fail", fail)
    assert raised.value.__traceback__ is not None
    (name, report), = coordinator.sent
    assert name == "test.fail" and report == {"error": ("CheckpointError", "The model weights w do not fit the model.")}
    with pytest.raises(CheckpointError, match="^The model weights w do not fit the model.$"):
        run_on_coordinator(OtherRank(report), "test.fail", _must_not_run)


def test_any_other_failure_on_rank_0_still_ends_every_rank():
    coordinator = Coordinator()
    with pytest.raises(ZeroDivisionError):
        run_on_coordinator(coordinator, "test.crash", lambda: 1 / 0)
    report = coordinator.sent[0][1]
    with pytest.raises(RankFailedError, match="Rank 0 failed with"):
        run_on_coordinator(OtherRank(report), "test.crash", _must_not_run)


def test_a_reported_error_keeps_hvd_trainer_error_classes_only():
    assert type(error_reported_by(0, "ConfigError", "m")) is ConfigError
    assert type(error_reported_by(3, "ValueError", "m")) is RankFailedError
    assert type(error_reported_by(3, "HvdTrainerErrorThatDoesNotExist", "m")) is RankFailedError
