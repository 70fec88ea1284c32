"""Every DistributedStrategy method on every rank: horovodrun (Gloo, MPI), mpirun, local."""
import json
import os

import pytest

from conftest import WORKERS, launcher_command, require_horovod, run_job

LAUNCHES = [("gloo", "horovod"), ("horovodrun-mpi", "horovod"), ("mpirun", "auto"), ("local", "local")]


def _run_checks(tmp_path, launcher, strategy):
    np_ = 1 if launcher == "local" else 2
    if launcher != "local":
        require_horovod()
    cmd = launcher_command(launcher, np_) + [os.path.join(WORKERS, "strategy_checks.py"), strategy, str(tmp_path)]
    result = run_job(cmd, timeout=180)
    assert result.returncode == 0, result.stdout[-4000:]
    return [json.load(open(tmp_path / f"rank{r}.json")) for r in range(np_)]


@pytest.fixture(scope="module", params=LAUNCHES, ids=[l for l, _ in LAUNCHES])
def ranks(request, tmp_path_factory):
    launcher, strategy = request.param
    return _run_checks(tmp_path_factory.mktemp(launcher), launcher, strategy)


def test_world_queries_are_consistent(ranks):
    n = len(ranks)
    assert sorted(r["rank"] for r in ranks) == list(range(n))
    for r in ranks:
        assert r["size"] == n and r["local_size"] == n
        assert r["local_rank"] == r["rank"]
        assert r["is_coordinator"] == (r["rank"] == 0)


def test_allreduce_averages_sums_and_extremes(ranks):
    n = len(ranks)
    for r in ranks:
        assert r["allreduce_average"] == pytest.approx([(n + 1) / 2, 10 * (n + 1) / 2])
        assert r["allreduce_sum"] == pytest.approx([n * (n + 1) / 2, 10 * n * (n + 1) / 2])
        assert r["allreduce_min"] == pytest.approx([1, 10])
        assert r["allreduce_max"] == pytest.approx([n, 10 * n])


def test_broadcast_of_tensor_and_nested_object_comes_from_rank0(ranks):
    for r in ranks:
        assert r["broadcast"] == [0.0, 7.0]
        assert r["broadcast_object"] == {"a": [1, {"b": [2, 3]}], "c": "text", "t": [0.5]}
        assert r["allgather_object"] == [{"rank": i} for i in range(len(ranks))]


def test_barrier_waits_for_the_slowest_rank(ranks):
    assert all(r["barrier_saw_marker"] for r in ranks)


def test_sync_model_makes_different_weights_equal_to_rank0(ranks):
    if len(ranks) > 1:
        assert ranks[0]["weights_before_sync"] != ranks[1]["weights_before_sync"]
    for r in ranks:
        assert r["weights_after_sync"] == ranks[0]["rank0_initial_weights"]


def test_sync_optimizer_copies_rank0_state(ranks):
    for r in ranks:
        assert r["optimizer_state"] == ranks[0]["optimizer_state"]
        assert len(r["optimizer_state"]) == 2 and all(s["step"] == 1.0 for s in r["optimizer_state"].values())


def test_distributed_optimizer_averages_gradients_like_one_big_batch(ranks):
    for r in ranks:
        assert r["step_params"] == ranks[0]["step_params"]  # bit-identical across ranks
        assert r["step_params"] == pytest.approx(r["reference_params"], abs=1e-6)


def test_backward_passes_per_step_accumulates_before_reducing(ranks):
    for r in ranks:
        assert r["step_params_accum2"] == pytest.approx(r["reference_params"], abs=1e-6)


def test_fp16_compression_stays_close_to_fp32(ranks):
    if "step_params_fp16" not in ranks[0]:
        pytest.skip("compression is a Horovod option")
    for r in ranks:
        assert r["step_params_fp16"] == ranks[0]["step_params_fp16"]
        assert r["step_params_fp16"] == pytest.approx(r["reference_params"], abs=1e-3)


def test_return_first_returns_only_on_rank0(ranks):
    for r in ranks:
        assert r["return_first"] == (["result", 0] if r["rank"] == 0 else None)


def test_gather_all_tensors_with_unequal_lengths(ranks):
    expected = [[100.0 * i + j for j in range(i + 1)] for i in range(len(ranks))]
    for r in ranks:
        assert r["gather_all_tensors"] == expected


def test_any_rank_agrees_when_one_rank_says_yes(ranks):
    for r in ranks:
        assert r["any_rank"] is True and r["any_rank_none"] is False
