"""The benchmark's scaling rows run and report (benchmarks/run.py, quick-sized): the two limits
(threads, processes) and torchrun + DDP on a tiny table, then the report's scaling section. No figure is checked."""
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, BENCH)
    try:
        import report
        import run
        import task
        yield run, task, report
    finally:
        sys.path.remove(BENCH)


def test_limit_and_ddp_rows_run_and_fill_the_scaling_table(bench_modules, tmp_path):
    run, task, report = bench_modules
    table = task.prepare_table(str(tmp_path / "data"), 600, 1)
    keys = ("threads_limit", "processes_limit", "ddp_np2")
    contenders = [c for c in run.CONTENDERS if c.key in keys]
    env = {**run.base_env(), "OMP_NUM_THREADS": "1"}
    runs = [run.run_one(c, table, 0, env, timeout=180) for c in contenders]
    for r in runs:
        assert "error" not in r, r.get("error")
        assert r["samples_per_s"] > 0 and 0 <= r["test_accuracy"] <= 1
    assert [r["world_size"] for r in runs] == [c.np for c in contenders]
    doc = {"created": "now", "duration_s": 1.0, "quick": True, "repeats": 1, "omp_num_threads": 1,
           "machine": {"nproc": 2, "cpu_model": "cpu", "python": "3", "load_average_start": [0.0],
                       "load_average_end": [0.0]},
           "tasks": [{k: v for k, v in table.items() if k not in ("paths", "features", "config", "task_json")}],
           "contenders": [c.__dict__ for c in contenders], "runs": runs}
    report.write_report(doc, str(tmp_path / "out"))
    md = (tmp_path / "out" / "bench.md").read_text()
    section = md[md.index("## Scaling"):md.index("## Targets")]
    for c in contenders:
        assert c.label in section
