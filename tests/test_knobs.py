"""Horovod's knobs: what the trainer chooses from the host it sees, what the config and the
environment override, and a timeline written under a real horovodrun -np 2 (Gloo and MPI)."""
import json
import os
import re
import sys

import pytest

from conftest import launcher_command, require_horovod, run_job

from hvd_trainer.config import DistributedConfig, HorovodConfig
from hvd_trainer.distributed.cpu_affinity import format_cores, share_of_cores
from hvd_trainer.distributed.knobs import CONFIG, DEFAULT, ENVIRONMENT, TRAINER, choose_knobs, controller_advice
from hvd_trainer.distributed.launcher import detect_launcher
from hvd_trainer.errors import ConfigError
from hvd_trainer.examples import example_config_path, write_example_dataset


def cpu_knobs(local_size=2, cores=2, controller="mpi", config=None, environ=None, pinned=False, local_rank=None,
              elastic=False):
    return choose_knobs(local_size, cores, controller, gpu=False, config=config, environ=environ or {},
                        pinned=pinned, local_rank=local_rank, elastic=elastic)


# ---- what the trainer chooses ------------------------------------------------------------
def test_two_cpu_ranks_on_two_cores_get_a_short_cycle_mpi_yield_and_one_thread_each():
    knobs = cpu_knobs()
    assert knobs.environment() == {"HOROVOD_CYCLE_TIME": "0.03", "OMPI_MCA_mpi_yield_when_idle": "1"}
    assert knobs.threads_to_set() == 1
    assert knobs.cycle_time.source == TRAINER and "1 ms" in knobs.cycle_time.reason
    assert "2 rank(s) on this host, 2 core(s)" in knobs.yield_when_idle.reason


def test_ranks_with_cores_of_their_own_keep_mpis_busy_polling():
    knobs = cpu_knobs(local_size=2, cores=16)
    assert knobs.yield_when_idle.value is None and knobs.yield_when_idle.source == DEFAULT
    assert knobs.threads_to_set() == 8


def test_a_pinned_rank_counts_only_its_own_cores():
    knobs = cpu_knobs(local_size=4, cores=4, pinned=True)
    assert knobs.threads_to_set() == 4
    assert knobs.yield_when_idle.value is None
    assert "pinned" in knobs.torch_threads.reason


def test_a_gloo_job_leaves_open_mpis_setting_and_horovods_cycle_time_alone():
    knobs = cpu_knobs(controller="gloo")
    assert knobs.cycle_time.value is None and "Gloo" in knobs.cycle_time.reason
    assert "OMPI_MCA_mpi_yield_when_idle" not in knobs.environment()
    assert "not an MPI job" in knobs.yield_when_idle.reason
    assert "HOROVOD_CYCLE_TIME" not in knobs.environment()


def test_gpu_ranks_keep_horovods_cycle_time_and_torchs_threads():
    knobs = choose_knobs(8, 64, "mpi", gpu=True, environ={})
    assert knobs.environment() == {}
    assert knobs.threads_to_set() is None
    assert "GPU" in knobs.cycle_time.reason


def test_the_fusion_threshold_is_horovods_default_on_every_host():
    assert cpu_knobs().fusion_threshold == choose_knobs(8, 96, "gloo", gpu=True, environ={}).fusion_threshold
    assert cpu_knobs().fusion_threshold.value is None


@pytest.mark.parametrize("host, pins, why", [
    (dict(controller="gloo"), True, "1 core(s) of its own"),
    (dict(controller="mpi", local_size=2, cores=16), True, "8 core(s) of its own"),
    (dict(local_size=1), False, "one rank on this host"),
    (dict(local_size=4, cores=2), False, "fewer cores than ranks"),
    (dict(pinned=True), False, "the launcher bound this rank already"),
    (dict(elastic=True), False, "elastic job"),
    (dict(local_rank=None), False, "did not say this rank's local rank"),
])
def test_cpu_ranks_sharing_a_host_each_get_cores_of_their_own(host, pins, why):
    knobs = cpu_knobs(**{"local_rank": 1, **host})
    assert knobs.pins_cores() == pins and why in knobs.cpu_affinity.reason
    assert knobs.cpu_affinity.source == (TRAINER if pins else DEFAULT)
    assert "HVD_TRAINER_CPU_AFFINITY" not in knobs.environment()  # the trainer applies it itself


def test_gpu_ranks_are_not_pinned():
    assert not choose_knobs(2, 16, "mpi", gpu=True, environ={}, local_rank=0).pins_cores()


@pytest.mark.parametrize("config, environ, pins, source", [
    (HorovodConfig(cpu_affinity=False), {}, False, CONFIG),
    (HorovodConfig(cpu_affinity=True), {"HVD_TRAINER_CPU_AFFINITY": "0"}, False, ENVIRONMENT),
    (HorovodConfig(), {"HVD_TRAINER_CPU_AFFINITY": "0"}, False, ENVIRONMENT),
])
def test_the_config_and_the_environment_decide_the_cpu_affinity(config, environ, pins, source):
    knobs = cpu_knobs(controller="gloo", local_rank=0, config=config, environ=environ)
    assert knobs.pins_cores() == pins and knobs.cpu_affinity.source == source
    # Asked for where the trainer would not pin (one rank has the host): the config wins.
    assert cpu_knobs(local_size=1, local_rank=0, config=HorovodConfig(cpu_affinity=True)).pins_cores()


@pytest.mark.parametrize("allowed, local_size, shares", [
    ([0, 1], 2, [[0], [1]]),
    ([4, 5, 6, 7, 8], 2, [[4, 5], [6, 7, 8]]),
    ([0, 1, 2, 3, 4, 5, 6, 7], 4, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ([2, 3], 3, [[2], [3], [2]]),
])
def test_a_hosts_cores_are_shared_out_by_local_rank(allowed, local_size, shares):
    assert [share_of_cores(allowed, r, local_size) for r in range(local_size)] == shares


def test_core_lists_read_as_linux_writes_them():
    assert format_cores([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and format_cores([3]) == "3"


# ---- overrides -----------------------------------------------------------------------------
def test_the_config_overrides_the_trainers_choice():
    config = HorovodConfig(cycle_time_ms=2.5, fusion_threshold_mb=32, yield_when_idle=False, torch_threads=3)
    knobs = cpu_knobs(config=config)
    assert knobs.environment() == {"HOROVOD_CYCLE_TIME": "2.5", "HOROVOD_FUSION_THRESHOLD": str(32 * 1024 * 1024),
                                   "OMPI_MCA_mpi_yield_when_idle": "0"}
    assert knobs.threads_to_set() == 3
    assert knobs.cycle_time.source == CONFIG and "distributed.horovod.cycle_time_ms" in knobs.cycle_time.reason


def test_the_environment_wins_over_the_config_and_is_not_exported_again():
    environ = {"HOROVOD_CYCLE_TIME": "5", "OMPI_MCA_mpi_yield_when_idle": "0", "OMP_NUM_THREADS": "2"}
    knobs = cpu_knobs(config=HorovodConfig(cycle_time_ms=0.5, torch_threads=1), environ=environ)
    assert knobs.cycle_time.value == "5" and knobs.cycle_time.source == ENVIRONMENT
    assert knobs.yield_when_idle.value == "0"
    assert knobs.environment() == {}
    assert knobs.threads_to_set() is None  # torch read OMP_NUM_THREADS itself


def test_autotune_leaves_cycle_time_and_fusion_to_the_tuner(tmp_path):
    log = tmp_path / "autotune.csv"
    knobs = cpu_knobs(config=HorovodConfig(autotune=True, autotune_log=str(log)))
    env = knobs.environment()
    # Horovod: a cycle time or fusion threshold given in the environment is fixed, not tuned.
    assert "HOROVOD_CYCLE_TIME" not in env and "HOROVOD_FUSION_THRESHOLD" not in env
    assert env["HOROVOD_AUTOTUNE"] == "1" and env["HOROVOD_AUTOTUNE_LOG"] == str(log)


def test_a_relative_timeline_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    knobs = cpu_knobs(config=HorovodConfig(timeline="trace/timeline.json", timeline_mark_cycles=True))
    assert knobs.environment()["HOROVOD_TIMELINE"] == str(tmp_path / "trace" / "timeline.json")
    assert knobs.environment()["HOROVOD_TIMELINE_MARK_CYCLES"] == "1"


def test_every_knob_says_its_value_source_and_reason():
    lines = cpu_knobs().describe()
    assert any(line.startswith("HOROVOD_CYCLE_TIME=0.03 [trainer] ") for line in lines)
    assert any(line.startswith("HOROVOD_FUSION_THRESHOLD=(not set) [default] ") for line in lines)
    assert any(line.startswith("torch.set_num_threads=1 [trainer] ") for line in lines)


# ---- the config section --------------------------------------------------------------------
@pytest.mark.parametrize("section, fragment", [
    ({"cycle_time_ms": 0}, "distributed.horovod.cycle_time_ms is 0"),
    ({"fusion_threshold_mb": -1}, "distributed.horovod.fusion_threshold_mb is -1"),
    ({"cycle_time": 1}, "Did you mean 'cycle_time_ms'"),
    ({"autotune": "yes"}, "distributed.horovod.autotune is 'yes'"),
    ({"autotune_log": "tune.csv"}, "distributed.horovod.autotune is false"),
    ({"timeline_mark_cycles": True}, "distributed.horovod.timeline is not set"),
    ({"timeline": ""}, "distributed.horovod.timeline is an empty string"),
])
def test_a_bad_horovod_section_names_the_key(section, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        DistributedConfig.from_dict({"horovod": section})


def test_the_horovod_section_defaults_to_the_trainers_choices():
    assert DistributedConfig.from_dict(None).horovod == HorovodConfig()
    assert DistributedConfig.from_dict({"horovod": {"cycle_time_ms": 0.5}}).horovod.cycle_time_ms == 0.5


# ---- ranks per host, before init -----------------------------------------------------------
@pytest.mark.parametrize("env, local_size", [
    ({"HOROVOD_RANK": "0", "HOROVOD_SIZE": "4", "HOROVOD_LOCAL_SIZE": "2"}, 2),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, 4),
    ({"SLURM_STEP_NUM_TASKS": "7", "SLURM_PROCID": "6", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "3"}, 1),
    ({"SLURM_STEP_NUM_TASKS": "7", "SLURM_PROCID": "2", "SLURM_STEP_TASKS_PER_NODE": "2(x3),1", "SLURM_NODEID": "1"}, 2),
    ({"PMI_RANK": "0", "PMI_SIZE": "2", "MPI_LOCALNRANKS": "2"}, 2),
    ({}, 1),
])
def test_the_launcher_says_how_many_ranks_share_the_host(env, local_size):
    assert detect_launcher(env).local_size == local_size


# ---- a timeline under horovodrun -np 2 -------------------------------------------------------
def load_trace(path):
    """Horovod's timeline as chrome://tracing and Perfetto read it: a JSON array of events whose
    closing bracket may be missing (Horovod appends events and may never close it)."""
    with open(path) as fh:
        text = fh.read().strip()
    if not text.endswith("]"):
        text = text.rstrip(",") + "]"
    return json.loads(text)


@pytest.mark.parametrize("launcher", ["gloo", "horovodrun-mpi"])
def test_a_timeline_from_the_config_is_written_and_opens_as_a_trace(launcher, tmp_path):
    require_horovod()
    data = write_example_dataset("digits", str(tmp_path / "digits.csv"))
    timeline = tmp_path / "timeline.json"
    r = run_job(launcher_command(launcher, 2) + [
        "-m", "hvd_trainer", "train", "--config", example_config_path("digits"), "--dataset", data,
        "--output-directory", str(tmp_path / "runs"), "--set", "trainer.epochs=1",
        "--set", f"distributed.horovod.timeline={timeline}", "--set", "distributed.horovod.timeline_mark_cycles=true"],
        timeout=300)
    assert r.returncode == 0, r.stdout[-4000:]
    events = load_trace(timeline)
    assert isinstance(events, list) and all(isinstance(e, dict) for e in events)
    phases = {e.get("ph") for e in events}
    assert "B" in phases and "E" in phases  # durations that the viewers draw
    assert any("ALLREDUCE" in str(e.get("name", "")) for e in events)
    assert os.path.getsize(timeline) > 0
    # Two ranks on one host: under Gloo rank 0 points to MPI (this Horovod has it), under MPI it says nothing.
    said = r.stdout + (r.stderr or "")
    assert ("launch 'horovodrun --mpi -np 2" in said) == (launcher == "gloo"), said[-3000:]


@pytest.mark.parametrize("controller,size,local_size,gpu,mpi_built,elastic,advised", [
    ("gloo", 2, 2, False, True, False, True),    # every rank on one host, MPI at hand
    ("gloo", 4, 2, False, True, False, False),   # across hosts: TCP is the exchange anyway
    ("gloo", 1, 1, False, True, False, False),   # nothing is exchanged
    ("gloo", 2, 2, True, True, False, False),    # GPUs exchange with NCCL
    ("gloo", 2, 2, False, False, False, False),  # no MPI to point to
    ("gloo", 2, 2, False, True, True, False),    # elastic training needs Gloo
    ("mpi", 2, 2, False, True, False, False),
])
def test_a_gloo_job_on_one_host_is_pointed_to_mpi(controller, size, local_size, gpu, mpi_built, elastic, advised):
    advice = controller_advice(controller, size, local_size, gpu, mpi_built, elastic)
    assert (advice is not None) == advised
    if advice:
        assert f"horovodrun --mpi -np {size}" in advice and "\n" not in advice


# ---- Open MPI's transports -----------------------------------------------------------------
def test_a_one_host_horovodrun_mpi_job_leaves_libfabric_out():
    knobs = choose_knobs(2, 2, "mpi", gpu=False, environ={"OMPI_MCA_btl": "^openib"}, size=2)
    assert knobs.mpi_transports.value == "^openib,ofi" and knobs.mpi_transports.source == TRAINER
    assert knobs.environment()["OMPI_MCA_btl"] == "^openib,ofi"
    assert "MPI_Finalize" in knobs.mpi_transports.reason


@pytest.mark.parametrize("environ, size, controller, why", [
    ({"OMPI_MCA_btl": "^openib"}, 4, "mpi", "several hosts"),  # 2 of 4 ranks here
    ({"OMPI_MCA_btl": "^openib"}, None, "mpi", "several hosts"),  # the launcher did not say
    ({"OMPI_MCA_btl": "self,vader,tcp"}, 2, "mpi", "set by the user"),
    ({}, 2, "mpi", "Open MPI's default"),
    ({"OMPI_MCA_btl": "^openib"}, 2, "gloo", "not an MPI job"),
])
def test_open_mpis_transports_are_otherwise_left_as_they_are(environ, size, controller, why):
    knobs = choose_knobs(2, 2, controller, gpu=False, environ=environ, size=size)
    assert knobs.mpi_transports.value == (environ.get("OMPI_MCA_btl") if controller == "mpi" else None)
    assert "OMPI_MCA_btl" not in knobs.environment()
    assert why in knobs.mpi_transports.reason


_TRANSPORTS_PROBE = """
from hvd_trainer.distributed.horovod import HorovodStrategy
strategy = HorovodStrategy()
with open("/proc/self/maps") as maps:
    loaded = "mca_btl_ofi" in maps.read()
print(f"RANK {strategy.rank()} btl={strategy.knobs.mpi_transports.value} ofi_loaded={loaded}", flush=True)
"""


def test_under_horovodrun_mpi_on_one_host_libfabric_is_not_loaded():
    """The knob reaches Open MPI: with horovodrun's own '^openib' the ofi transport would be loaded into every rank."""
    require_horovod()
    probe = "import mpi4py.MPI; print('mca_btl_ofi' in open('/proc/self/maps').read())"
    r = run_job(["mpirun", "-np", "1", "--mca", "btl", "^openib", sys.executable, "-c", probe], timeout=60)
    if r.stdout.strip().splitlines()[-1:] != ["True"]:
        pytest.skip(f"this Open MPI does not load a separate ofi transport with '^openib': {r.stdout[-300:]}")
    r = run_job(launcher_command("horovodrun-mpi", 2) + ["-c", _TRANSPORTS_PROBE], timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
    # mpirun's --tag-output can glue one rank's line to another's: find each report wherever it is.
    lines = sorted(re.findall(r"RANK (\d btl=\S+? ofi_loaded=(?:True|False))", r.stdout))
    assert lines == ["0 btl=^openib,ofi ofi_loaded=False", "1 btl=^openib,ofi ofi_loaded=False"], r.stdout[-2000:]
