"""Elastic training without Horovod: the re-shard arithmetic, the schedule across a world size change,
and when elastic mode is on. The runs under a real elastic horovodrun are in test_elastic_multihost.py."""
from __future__ import annotations

import collections
import itertools

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
