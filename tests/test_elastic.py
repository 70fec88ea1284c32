"""Elastic training without Horovod: the re-shard arithmetic, the schedule across a world size change,
and when elastic mode is on. The runs under a real elastic horovodrun are in test_elastic_multihost.py."""
from __future__ import annotations

import collections
import itertools
import os

import numpy as np
import pytest

from hvd_trainer.config import DistributedConfig, TrainerConfig
from hvd_trainer.data.dataset import Dataset, consumed_samples, deal
from hvd_trainer.distributed.elastic import elastic_requested
from hvd_trainer.errors import ConfigError, DataError
from hvd_trainer.progress import ProgressTracker
from hvd_trainer.schedule import Schedule


class World:
    """Only what a Batcher asks of a strategy for an unsharded dataset: its rank and the world size."""

    def __init__(self, rank: int, size: int):
        self._rank, self._size = rank, size

    def rank(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size


def rows_dataset(n: int) -> Dataset:
    return Dataset({"row": np.arange(n)}, name="rows")


def train_epoch_with_change(n: int, batch: int, old: int, new: int, batches_before: int, epoch: int = 3):
    """Every row each rank trains on in one epoch: `batches_before` lockstep batches at `old` ranks,
    then the position handed over as a number of samples and the rest dealt over `new` ranks."""
    data, seen = rows_dataset(n), []
    batchers = [data.initialize_batcher(batch, True, 7, World(r, old)) for r in range(old)]
    for b in batchers:
        b.set_epoch(epoch, batch)
    for _ in range(batches_before):
        for b in batchers:
            seen.extend(b.next_batch()["row"].tolist())
    consumed = batchers[0].samples_consumed()
    assert consumed == consumed_samples(0, batches_before, batch, old, n)
    batchers = [data.initialize_batcher(batch, True, 7, World(r, new)) for r in range(new)]
    for b in batchers:
        b.set_epoch(epoch, batch, consumed)
    steps = {b.batches_from(consumed) for b in batchers}
    assert len(steps) == 1, "every rank of the new world must take the same number of batches"
    while not batchers[0].last_batch():
        for b in batchers:
            assert not b.last_batch()
            seen.extend(b.next_batch()["row"].tolist())
    assert all(b.last_batch() for b in batchers)
    return seen, consumed, steps.pop()


@pytest.mark.parametrize("n,batch,old,new,before", [
    (100, 4, 3, 2, 5), (100, 4, 2, 3, 5), (97, 5, 3, 2, 1), (97, 5, 3, 1, 6), (13, 3, 3, 2, 1), (68, 5, 2, 3, 2), (1000, 16, 4, 3, 7),
    (64, 8, 2, 4, 0), (50, 7, 3, 2, 2),
])
def test_no_sample_of_an_epoch_is_skipped_or_repeated_across_a_world_size_change(n, batch, old, new, before):
    seen, consumed, _ = train_epoch_with_change(n, batch, old, new, before)
    counts = collections.Counter(seen)
    assert set(counts) == set(range(n)), "every sample of the epoch is trained on"
    # The only repeats are the padding that evens out the new world's ranks: fewer than `new` samples,
    # all of them after the change.
    pad = (-(n - consumed)) % new
    assert len(seen) == n + pad and pad < new
    assert sum(c - 1 for c in counts.values()) == pad


def test_the_samples_before_the_change_are_the_prefix_of_the_epoch_order():
    n, batch, old = 100, 4, 3
    seen, consumed, _ = train_epoch_with_change(n, batch, old, 2, 5)
    order = np.random.default_rng([7, 3]).permutation(n)
    assert consumed == 5 * batch * old == 60
    assert sorted(seen[:consumed]) == sorted(order[:consumed].tolist())


def test_dealing_from_offset_zero_is_the_static_batcher():
    order = np.random.default_rng(0).permutation(23)
    for size in (1, 2, 3, 5):
        parts = [deal(order, 0, r, size) for r in range(size)]
        assert {len(p) for p in parts} == {-(-23 // size)}
        dealt = list(itertools.chain(*parts))
        assert set(dealt) == set(order.tolist()) and len(dealt) - 23 == (-23) % size
        # Round-robin: rank r's i-th sample is entry i * size + r of the (padded) order.
        assert [p[0] for p in parts] == [order[r % 23] for r in range(size)]


def test_consumed_samples_is_capped_at_the_epoch():
    assert consumed_samples(0, 3, 10, 4, 100) == 100
    assert consumed_samples(40, 1, 10, 2, 100) == 60
    assert consumed_samples(90, 0, 10, 2, 100) == 90


def test_an_offset_is_refused_for_a_sharded_or_evaluation_batcher():
    sharded = Dataset({"row": np.arange(10)}, sharded=True, name="rows")
    with pytest.raises(DataError, match="unsharded training set"):
        sharded.initialize_batcher(2, True, 1, None).set_epoch(0, 2, 4)
    with pytest.raises(DataError, match="unsharded training set"):
        rows_dataset(10).initialize_batcher(2, True, 1, None, training=False).set_epoch(0, 2, 4)


def test_the_schedule_after_a_change_keeps_the_epochs_in_samples():
    """3 -> 2 ranks after 5 of 9 batches of epoch 1: the rest of the epoch at 2 ranks, then 2 epochs at 2 ranks."""
    n, batch = 100, 4
    config = TrainerConfig.from_dict({"epochs": 4, "batch_size": batch})
    data = rows_dataset(n)
    before = data.initialize_batcher(batch, True, 7, World(0, 3))
    assert before.steps_per_epoch == 9
    pt = ProgressTracker(epoch=1, steps=9 + 5, epoch_step=0, batch_size=batch, world_size=2,
                         epoch_offset=consumed_samples(0, 5, batch, 3, n))
    after = data.initialize_batcher(batch, True, 7, World(0, 2))
    after.set_epoch(1, batch, pt.epoch_offset)
    rest = after.batches_from(pt.epoch_offset)
    assert rest == -(-(-(-(n - 60) // 2)) // batch) == 5
    schedule = Schedule.of(config, after.steps_per_epoch, pt, rest)
    assert schedule.total_steps == 14 + 5 + 2 * 13
    # The same position reached in a static world: the usual formula, unchanged.
    static = Schedule.of(config, 9, ProgressTracker(epoch=1, steps=14, epoch_step=5, batch_size=batch))
    assert static.total_steps == 14 + (9 - 5) + 2 * 9


def test_elastic_follows_the_launcher_unless_the_config_says_otherwise():
    assert elastic_requested(None, {"HOROVOD_ELASTIC": "1"}) is True
    assert elastic_requested(None, {}) is False
    assert elastic_requested(False, {"HOROVOD_ELASTIC": "1"}) is False
    assert elastic_requested(True, {"HOROVOD_ELASTIC": "1"}) is True
    with pytest.raises(ConfigError, match="not started by an elastic launcher.*--host-discovery-script"):
        elastic_requested(True, {})


def test_the_distributed_section_takes_elastic_settings():
    assert DistributedConfig.from_dict({}).elastic is None
    config = DistributedConfig.from_dict({"elastic": True, "elastic_commit_steps": 20})
    assert (config.elastic, config.elastic_commit_steps) == (True, 20)
    with pytest.raises(ConfigError, match="elastic_commit_steps"):
        DistributedConfig.from_dict({"elastic_commit_steps": 0})


def test_elastic_true_under_the_local_strategy_is_a_clear_error():
    from hvd_trainer.commands.shared import start_strategy

    with pytest.raises(ConfigError, match="not started by an elastic launcher"):
        start_strategy(DistributedConfig.from_dict({"strategy": "local", "elastic": True}))


def test_a_mid_epoch_elastic_position_folds_into_batches_for_a_fixed_job():
    from hvd_trainer.resume import fold_offset

    pt = ProgressTracker(epoch=1, steps=20, epoch_step=3, epoch_offset=180, batch_size=10, world_size=2)
    folded = fold_offset(pt)
    # 180 samples before the change + 3 batches x 10 x 2 ranks = 240 samples = 12 batches at 2 ranks.
    assert (folded.epoch_offset, folded.epoch_step, folded.world_size) == (0, 12, 2)
    assert fold_offset(ProgressTracker(epoch_step=4, batch_size=10, world_size=3)).epoch_step == 4


def test_the_static_discovery_script_lists_the_file_s_hosts(tmp_path):
    import os
    import subprocess

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "elastic", "discover_hosts_file.sh")
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("h1:2\n# h9:4 is away\n\nh2\n  h3:1  # spare\n")
    r = subprocess.run(["bash", script], env={**os.environ, "HVD_ELASTIC_HOSTS": str(hosts)},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["h1:2", "h2:1", "h3:1"], r.stderr
    r = subprocess.run(["bash", script], env={**os.environ, "HVD_ELASTIC_HOSTS": str(tmp_path / "none.txt")},
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert r.returncode != 0 and "cannot read the hosts file" in r.stderr


# ---- the last commit saved when the world is lost (commit_checkpoint.py), and the watchdog -------------------
def _handle(hidden: int = 3):
    import torch

    from hvd_trainer.checkpoint import Checkpoint
    from hvd_trainer.distributed import LocalStrategy

    model = torch.nn.Linear(2, hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    return model, optimizer, scheduler, Checkpoint(LocalStrategy(), model, optimizer, scheduler)


def _commit(model, optimizer, scheduler, **progress):
    """What ElasticTraining.snapshot holds (the parts a checkpoint keeps), with a tracker of `progress`."""
    import copy

    return copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "scaler": None,
                          "progress": ProgressTracker(**progress)})


def _manager(tmp_path, checkpoint):
    from hvd_trainer.checkpoint import CheckpointManager
    from hvd_trainer.distributed import LocalStrategy

    return CheckpointManager(checkpoint, str(tmp_path / "training_checkpoints"), LocalStrategy())


def test_a_saved_commit_is_what_resume_continues_from_mid_epoch_position_included(tmp_path):
    import torch

    from hvd_trainer.commit_checkpoint import save_commit
    from hvd_trainer.distributed import LocalStrategy
    from hvd_trainer.resume import resume

    model, optimizer, scheduler, checkpoint = _handle()
    manager, progress_path = _manager(tmp_path, checkpoint), str(tmp_path / "training_progress.json")
    manager.save(progress=ProgressTracker(epoch=1, steps=7, batch_size=10, world_size=3).to_dict())  # an evaluation's
    with torch.no_grad():
        model.weight.add_(1.0)
    commit = _commit(model, optimizer, scheduler, epoch=1, steps=11, epoch_step=2, epoch_offset=60, batch_size=10,
                     world_size=2)
    assert save_commit(manager, progress_path, commit, commit["progress"])
    with torch.no_grad():
        model.weight.zero_()  # what a new process starts from
    resumed = resume(manager, progress_path, LocalStrategy(), model, optimizer, scheduler)
    assert (resumed.progress.steps, resumed.progress.epoch_step, resumed.progress.epoch_offset,
            resumed.progress.world_size) == (11, 2, 60, 2)
    assert torch.equal(model.weight, commit["model"]["weight"])
    assert resumed.rng_states is None  # only this process's are known: none restored
    assert ProgressTracker.load(__import__("json").load(open(progress_path))).steps == 11
    # The evaluation's checkpoint is kept as previous.ckpt.
    assert torch.load(manager.previous_path, weights_only=True)["meta"]["progress"]["steps"] == 7


def test_a_commit_never_replaces_a_checkpoint_of_the_same_step_or_a_later_one(tmp_path):
    from hvd_trainer.commit_checkpoint import checkpoint_step, save_commit

    model, optimizer, scheduler, checkpoint = _handle()
    manager, progress_path = _manager(tmp_path, checkpoint), str(tmp_path / "training_progress.json")
    manager.save(progress=ProgressTracker(steps=14).to_dict())
    before = open(manager.latest_path, "rb").read()
    for steps in (9, 14):
        assert not save_commit(manager, progress_path, _commit(model, optimizer, scheduler, steps=steps),
                               ProgressTracker(steps=steps))
    assert open(manager.latest_path, "rb").read() == before and not os.path.exists(progress_path)
    # A broken latest.ckpt is no newer than anything: the commit replaces it.
    open(manager.latest_path, "wb").write(before[: len(before) // 2])
    assert checkpoint_step(manager.latest_path) is None
    assert save_commit(manager, progress_path, _commit(model, optimizer, scheduler, steps=9), ProgressTracker(steps=9))
    assert checkpoint_step(manager.latest_path) == 9


SAVE_COMMIT_IN_A_PROCESS = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_elastic import _commit, _handle, _manager
import pathlib
model, optimizer, scheduler, checkpoint = _handle()
torch.manual_seed(0); model.reset_parameters()
from hvd_trainer.commit_checkpoint import save_commit
for steps in range(1, 30):
    c = _commit(model, optimizer, scheduler, steps=steps)
    save_commit(_manager(pathlib.Path(sys.argv[1]), checkpoint), sys.argv[1] + "/training_progress.json", c, c["progress"])
"""


def test_survivors_saving_the_same_commits_at_once_on_one_disk_leave_complete_files(tmp_path):
    import subprocess
    import sys

    from hvd_trainer.commit_checkpoint import checkpoint_step

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", SAVE_COMMIT_IN_A_PROCESS, str(tmp_path), tests_dir],
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    directory = tmp_path / "training_checkpoints"
    assert checkpoint_step(str(directory / "latest.ckpt")) == 29
    assert checkpoint_step(str(directory / "previous.ckpt")) is not None
    assert sorted(os.listdir(directory)) == ["latest.ckpt", "previous.ckpt"]  # no temporary file left
    assert sorted(os.listdir(tmp_path)) == ["training_checkpoints", "training_progress.json"]


def test_the_watchdog_speaks_a_margin_before_horovodrun_s_timeout_and_not_once_cancelled():
    import threading

    from hvd_trainer.distributed.elastic import RendezvousWatchdog, elastic_timeout, warning_delay

    assert (warning_delay(600), warning_delay(10), warning_delay(1)) == (570, 8, 0)
    assert elastic_timeout({}) == 600 and elastic_timeout({"HOROVOD_ELASTIC_TIMEOUT": "45"}) == 45
    fired, calls = threading.Event(), []
    RendezvousWatchdog(1, lambda waited, timeout: (calls.append((waited, timeout)), fired.set())).start()
    assert fired.wait(60) and calls[0][1] == 1 and calls[0][0] >= 0
    cancelled = RendezvousWatchdog(600, lambda *a: calls.append(a)).start()
    cancelled.cancel()
    cancelled._timer.join(60)
    assert len(calls) == 1


def test_a_run_resumed_at_another_world_size_mid_epoch_still_evaluates_at_each_epoch_s_end():
    """The last commit at step 58 of 27-step epochs (3 ranks: epoch 2, 4 batches in), resumed on 2 ranks (40-step
    epochs): 6 batches of epoch 2 are behind, so it ends at step 58 + 34 = 92, the next one at 132."""
    from hvd_trainer.resume import remap

    config = TrainerConfig.from_dict({"epochs": 4, "batch_size": 16})
    pt = remap(ProgressTracker(epoch=2, steps=58, epoch_step=4, batch_size=16, world_size=3), 3, 2, 40)
    assert pt.epoch_step == 6
    schedule = Schedule.of(config, 40, pt)
    assert schedule.total_steps == 132 and schedule.next_evaluation_after(58) == 80  # multiples of 40: mid-epoch
    aligned = schedule.aligned_to_epoch_end(pt, 1)
    assert aligned.next_evaluation_after(58) == 92 and aligned.next_evaluation_after(92) == 132
    # Two evaluations per epoch: on the epoch's middle and end.
    halves = Schedule.of(TrainerConfig.from_dict({"epochs": 4, "batch_size": 16, "checkpoints_per_epoch": 2}), 40, pt)
    assert halves.aligned_to_epoch_end(pt, 1).next_evaluation_after(58) == 72
    # A run that was not resized keeps the multiples.
    assert Schedule.of(config, 40, ProgressTracker(epoch=2, steps=86, epoch_step=6)).next_evaluation_after(86) == 120
