"""hvd_trainer against the limit and the usual alternatives, side by side, in one run.

Contenders, each a separate process (or horovodrun/torchrun job) started from scratch, on the same task:

    hvd_trainer      python -m hvd_trainer train --config ... (its CLI), horovodrun -np 1 and -np 2
                     (Gloo; np=2 also under MPI); it chooses Horovod's knobs itself
    horovod_loop     the hand-written canonical Horovod loop (bare_loops.py), -np 1 and -np 2; at
                     np=2 under Gloo and MPI, each with Horovod's and MPI's defaults and with the
                     knobs hvd_trainer would choose (distributed/knobs.py: "tuned")
    ddp_loop         the same loop with torch.distributed (Gloo) + DistributedDataParallel under
                     torchrun, np=2: the peer a user would pick instead of Horovod
    torch_loop       the same loop in one process with plain PyTorch (1 thread, and 2 threads)
    threads_limit    two replicas trained by two threads of one process, with no gradient
                     exchange, and
    processes_limit  two replicas trained by two processes (torchrun), exchanging nothing but a
                     barrier per epoch: the faster of the two is the most np=2 can reach on this
                     machine (the scaling table's limit)
    lightning        PyTorch Lightning, 1 device, and DDP with 2 CPU processes
                     (only when `make bench-peers` has installed it in benchmarks/.venv-peers)

Tasks (benchmarks/task.py): a 200,000-row make_classification table (64 features, 10 classes)
with the small MLP (26k parameters) and with a 1.1M-parameter one ("wide"), the digits example,
and "memory": hvd_trainer's peak RSS per rank on a 1M-row table at np=1 and np=2 (and on 2,000
rows: the footprint). Runs alternate: each repeat runs every contender once, in an order
rotated by one each repeat, so that noise from a shared machine hits all of them alike; min and
median are reported. Each run reports wall time of the whole process, launch to first training
step, training time (the loop without evaluation and checkpoints), samples/s, test accuracy
and every rank's peak RSS.

Also run: benchmarks/checkpoint_bench.py (checkpoint save vs torch.save) and
benchmarks/profile_step.py (where hvd_trainer's per-step time goes, under cProfile).

Writes OUT_DIR/bench.json (every run), bench.md (tables, ratios, targets) and bench.png.

usage: python benchmarks/run.py [--quick] [--repeats 3] [--out-dir benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import task as bench  # noqa: E402
from common import BIN, REPO, env as base_env  # noqa: E402

PEERS_PYTHON = os.environ.get("HVD_TRAINER_PEERS_PYTHON",
                              os.path.join(HERE, ".venv-peers", "bin", "python"))
DATA_DIR = os.path.join(HERE, ".data")
WORK_DIR = os.path.join(HERE, ".work")


ALL_TASKS = ("table", "wide", "digits", "memory")
SCALING_TASKS = ("table", "wide")


@dataclass(frozen=True)
class Contender:
    key: str          # unique id, e.g. hvd_trainer_np2
    family: str       # hvd_trainer | horovod_loop | torch_loop | ddp_loop | *_limit | lightning
    label: str        # for tables and the chart
    np: int
    needs_peers: bool = False
    tasks: Tuple[str, ...] = ("table", "wide", "digits")
    controller: str = "gloo"          # horovodrun --gloo or --mpi
    tuned: bool = False               # a bare loop run with the knobs hvd_trainer would choose
    threads: Optional[int] = None     # OMP_NUM_THREADS for this contender instead of --threads


_SCALING = SCALING_TASKS
CONTENDERS = [
    Contender("hvd_trainer_np1", "hvd_trainer", "hvd_trainer CLI, np=1", 1, tasks=ALL_TASKS + ("memory_footprint",)),
    Contender("hvd_trainer_np2", "hvd_trainer", "hvd_trainer CLI, np=2", 2, tasks=ALL_TASKS + ("memory_footprint",)),
    Contender("hvd_trainer_np2_mpi", "hvd_trainer", "hvd_trainer CLI, np=2, MPI", 2, tasks=_SCALING, controller="mpi"),
    Contender("horovod_loop_np1", "horovod_loop", "bare Horovod loop, np=1", 1),
    Contender("horovod_loop_np2", "horovod_loop", "bare Horovod loop, np=2, Gloo, defaults", 2),
    Contender("horovod_loop_np2_tuned", "horovod_loop", "bare Horovod loop, np=2, Gloo, tuned", 2, tasks=_SCALING,
              tuned=True),
    Contender("horovod_loop_np2_mpi", "horovod_loop", "bare Horovod loop, np=2, MPI, defaults", 2, tasks=_SCALING,
              controller="mpi"),
    Contender("horovod_loop_np2_mpi_tuned", "horovod_loop", "bare Horovod loop, np=2, MPI, tuned", 2,
              tasks=_SCALING, controller="mpi", tuned=True),
    Contender("ddp_np2", "ddp_loop", "bare torch DDP loop (torchrun, Gloo), np=2", 2, tasks=_SCALING),
    Contender("torch_loop", "torch_loop", "bare PyTorch loop, 1 process", 1),
    Contender("torch_loop_2threads", "torch_loop", "bare PyTorch loop, 1 process, 2 threads", 1, tasks=_SCALING,
              threads=2),
    Contender("threads_limit", "threads_limit", "limit: 2 replicas in 2 threads, no exchange", 2, tasks=_SCALING),
    Contender("processes_limit", "processes_limit", "limit: 2 replicas in 2 processes, no exchange", 2,
              tasks=_SCALING),
    Contender("lightning_1", "lightning", "Lightning, 1 device", 1, needs_peers=True, tasks=("table", "digits")),
    Contender("lightning_ddp2", "lightning", "Lightning DDP, 2 processes", 2, needs_peers=True,
              tasks=("table", "digits")),
]


def horovodrun_cmd(np_: int, argv: List[str], controller: str = "gloo") -> List[str]:
    return [os.path.join(BIN, "horovodrun"), "-np", str(np_), "-H", f"localhost:{np_}", f"--{controller}",
            "--disable-cache", sys.executable] + argv


def command(c: Contender, task: Dict[str, Any], run_dir: str) -> List[str]:
    p = task["paths"]
    if c.family == "hvd_trainer":
        return horovodrun_cmd(c.np, [
            os.path.join(HERE, "hvd_cli.py"), "train", "--config", task["config"],
            "--training-set", p["training"], "--validation-set", p["validation"], "--test-set", p["test"],
            "--output-directory", run_dir, "--random-seed", str(task["seed"])], c.controller)
    task_json = task["task_json"]
    loop = os.path.join(HERE, "bare_loops.py")
    if c.family == "horovod_loop":
        return horovodrun_cmd(c.np, [loop, "--kind", "horovod", "--task", task_json], c.controller)
    if c.family in ("ddp_loop", "processes_limit"):
        return [os.path.join(BIN, "torchrun"), "--standalone", "--nproc-per-node", str(c.np), loop,
                "--kind", "ddp" if c.family == "ddp_loop" else "processes", "--task", task_json]
    if c.family in ("torch_loop", "threads_limit"):
        return [sys.executable, loop, "--kind", "torch" if c.family == "torch_loop" else "threads", "--task", task_json]
    return [PEERS_PYTHON, os.path.join(HERE, "peers", "lightning_task.py"), "--task", task_json,
            "--devices", str(c.np), "--root-dir", run_dir]


def contender_env(c: Contender, env: Dict[str, str]) -> Dict[str, str]:
    """The contender's environment: its own thread count, and for a tuned bare loop the Horovod and
    Open MPI variables that hvd_trainer chooses itself (distributed/knobs.py) for this host."""
    env = dict(env)
    if c.threads:
        env["OMP_NUM_THREADS"] = str(c.threads)
    if c.tuned:
        env.update(tuned_knobs(c.np, c.controller, env))
    return env


#: Open MPI's transports for a tuned bare loop (see tuned_knobs).
BARE_LOOP_BTL = "BARE_LOOP_OMPI_MCA_BTL"


def tuned_knobs(np_: int, controller: str, env: Dict[str, str]) -> Dict[str, str]:
    """The variables of hvd_trainer's choice, and HVD_TRAINER_CPU_AFFINITY=1 where it would pin each rank
    to cores of its own (bare_loops.py does it then, as the trainer does, before hvd.init()).

    Open MPI's transports travel as BARE_LOOP_BTL: horovodrun puts its own `-mca btl` on mpirun's command
    line, which would win over an OMPI_MCA_btl in the environment; bare_loops.py sets it in the rank before
    hvd.init(), where the trainer sets it too."""
    from hvd_trainer.distributed.knobs import CPU_AFFINITY_VARIABLE, HOROVODRUN_BTL, choose_knobs

    seen_by_a_rank = dict(env, OMPI_MCA_btl=HOROVODRUN_BTL) if controller == "mpi" else env  # horovodrun's mpirun
    knobs = choose_knobs(local_size=np_, cores=len(os.sched_getaffinity(0)), controller=controller, gpu=False,
                         environ=seen_by_a_rank, local_rank=0, size=np_)
    chosen = knobs.environment()
    if "OMPI_MCA_btl" in chosen:
        chosen[BARE_LOOP_BTL] = chosen.pop("OMPI_MCA_btl")
    if knobs.pins_cores():
        chosen[CPU_AFFINITY_VARIABLE] = "1"
    return chosen


def parse_output(text: str) -> Dict[str, Any]:
    """The BENCH_RESULT of rank 0 and the BENCH_RANK lines of every rank, wherever a launcher put them."""
    result, ranks = None, []
    for line in text.splitlines():
        for mark in (bench.RESULT_MARK, bench.RANK_MARK):
            i = line.find(mark)
            if i >= 0:
                try:
                    # raw_decode: mpirun's --tag-output may glue the next write's "[1,0]<stdout>:" to the line.
                    value, _ = json.JSONDecoder().raw_decode(line[i + len(mark):])
                except ValueError:
                    continue
                if mark == bench.RESULT_MARK:
                    result = value
                else:
                    ranks.append(value)
    return {"result": result, "ranks": sorted(ranks, key=lambda r: (r["rank"] is None, r["rank"]))}


def run_process(cmd: List[str], env: Dict[str, str], timeout: int):
    """(stdout+stderr, exit code or a timeout note). The command gets its own process group, so
    that a timeout or Ctrl-C ends the ranks that horovodrun or Lightning started, not only the launcher."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return output, proc.returncode
    except BaseException as e:  # TimeoutExpired, KeyboardInterrupt
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            return output, f"timeout after {timeout} s"
        raise


def run_one(c: Contender, task: Dict[str, Any], repeat: int, env: Dict[str, str], timeout: int) -> Dict[str, Any]:
    os.makedirs(WORK_DIR, exist_ok=True)  # a fresh clone has no benchmarks/.work yet
    run_dir = tempfile.mkdtemp(prefix=f"{task['name']}_{c.key}_", dir=WORK_DIR)
    cmd = command(c, task, run_dir)
    log_path = os.path.join(WORK_DIR, "logs", f"{task['name']}_{c.key}_r{repeat}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    record: Dict[str, Any] = {"task": task["name"], "contender": c.key, "family": c.family, "np": c.np,
                              "repeat": repeat, "log": os.path.relpath(log_path, REPO)}
    env = contender_env(c, env)
    record["knobs"] = {k: v for k, v in env.items() if k.startswith(("HOROVOD_", "OMPI_MCA_", "OMP_NUM"))}
    t_launch = time.time()
    output, rc = run_process(cmd, env, timeout)
    wall = time.time() - t_launch
    shutil.rmtree(run_dir, ignore_errors=True)
    with open(log_path, "w") as fh:
        fh.write(" ".join(cmd) + "\n\n" + output)
    parsed = parse_output(output)
    r = parsed["result"]
    record.update(wall_s=wall, returncode=rc, ranks=parsed["ranks"])
    if rc != 0 or r is None:
        record["error"] = f"exit {rc}; see {record['log']}: " + output[-1500:]
        return record
    samples = task["rows"]["training"] * task["epochs"]
    if task.get("train_steps"):  # a fixed number of steps (the memory task): the samples they took
        samples = r["steps_per_rank"] * task["batch_size"] * (r["world_size"] or 1)
    record.update(
        launch_to_first_step_s=r["t_first_step"] - t_launch,
        # launcher + interpreter start, then imports + data + setup inside the process
        launch_to_process_s=r["t_process_start"] - t_launch,
        process_to_first_step_s=r["t_first_step"] - r["t_process_start"],
        train_s=r["train_s"], eval_s=r["eval_s"], loop_s=r["loop_s"], steps_per_rank=r["steps_per_rank"],
        world_size=r["world_size"], threads=r.get("threads"), samples=samples, samples_per_s=samples / r["train_s"],
        step_us=r["train_s"] / r["steps_per_rank"] * 1e6 if r["steps_per_rank"] else None,
        test_accuracy=r["test_accuracy"], validation_accuracy=r.get("validation_accuracy"),
        epoch_train_s=r.get("epoch_train_s"),
        # The fastest epoch: the least disturbed by other jobs on a shared machine.
        best_epoch_samples_per_s=task["rows"]["training"] / min(r["epoch_train_s"]) if r.get("epoch_train_s") else None,
        best_epoch_step_us=min(r["epoch_train_s"]) / (r["steps_per_rank"] / len(r["epoch_train_s"])) * 1e6
        if r.get("epoch_train_s") and r["steps_per_rank"] else None,
        peak_rss_mb=[x["peak_rss_mb"] for x in parsed["ranks"]],
    )
    if r.get("lightning"):
        record["lightning_version"] = r["lightning"]
    return record


def describe(record: Dict[str, Any]) -> str:
    if "error" in record:
        return f"FAILED ({record['returncode']}, log {record['log']})"
    rss = "/".join(f"{m:.0f}" for m in record["peak_rss_mb"])
    return (f"wall {record['wall_s']:6.1f} s  first step {record['launch_to_first_step_s']:5.1f} s  "
            f"train {record['train_s']:6.2f} s  {record['samples_per_s']:9.0f} samples/s  "
            f"test acc {record['test_accuracy']:.4f}  RSS {rss} MB")


# ---- side runs: checkpoint bench and profile ----------------------------------------------------
def _run_json_tool(name: str, cmd, out: str, env, timeout: int) -> Dict[str, Any]:
    """Run a side measurement that writes its result to `out`; {"error": ...} if it fails."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{name} took over {timeout} s"}
    if proc.returncode != 0 or not os.path.exists(out):
        return {"error": (proc.stdout + proc.stderr)[-2000:]}
    with open(out) as fh:
        return json.load(fh)


def run_checkpoint_bench(env, repeats: int, timeout: int) -> Dict[str, Any]:
    out = os.path.join(WORK_DIR, "checkpoint_bench.json")
    cmd = [sys.executable, os.path.join(HERE, "checkpoint_bench.py"), "--repeats", str(repeats), "--json", out,
           "--dir", WORK_DIR]
    result = _run_json_tool("checkpoint_bench.py", cmd, out, env, timeout)
    if "error" not in result:
        result["repeats"] = repeats
    return result


def run_profile(task: Dict[str, Any], env, epochs: int, timeout: int) -> Dict[str, Any]:
    out = os.path.join(WORK_DIR, "profile.json")
    cmd = horovodrun_cmd(1, [os.path.join(HERE, "profile_step.py"), "--task", task["task_json"], "--epochs", str(epochs),
                             "--json", out])
    return _run_json_tool("profile_step.py", cmd, out, env, timeout)


# ---- the machine ---------------------------------------------------------------------------------
def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {"nproc": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                            "platform": platform.platform(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as fh:
            models = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        info["cpu_model"] = models[0] if models else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    info["load_average_start"] = os.getloadavg()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "hvd_trainer"], capture_output=True, text=True,
                           cwd=REPO)
    if git.returncode == 0:
        info["commit"] = git.stdout.strip() + (" + uncommitted changes in hvd_trainer/" if dirty.stdout.strip() else "")
    versions = subprocess.run(
        [sys.executable, "-c", "import torch, horovod, numpy; print(torch.__version__, horovod.__version__, "
                               "numpy.__version__)"], capture_output=True, text=True, env=base_env())
    if versions.returncode == 0:
        info["torch"], info["horovod"], info["numpy"] = versions.stdout.split()
    return info


def peers_available() -> Optional[str]:
    """Lightning's version in the peers' venv, or None (with the reason printed)."""
    if not os.path.exists(PEERS_PYTHON):
        print(f"[bench] Lightning is not installed ({PEERS_PYTHON} does not exist): its runs are skipped. "
              "Run 'make bench-peers' to add them.", flush=True)
        return None
    proc = subprocess.run([PEERS_PYTHON, "-c", "import lightning; print(lightning.__version__)"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"[bench] {PEERS_PYTHON} cannot import lightning; its runs are skipped. Run 'make bench-peers' "
              f"again.\n{proc.stderr[-800:]}", flush=True)
        return None
    return proc.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="Smoke run (a few minutes): 4,000-row table, 2 epochs (wide: 1), every contender once; digits "
                        "(2 epochs) for hvd_trainer only; the memory task as in a full run; checkpoint bench once; a "
                        "short profile.")
    p.add_argument("--repeats", type=int, help="Runs of each contender per task (default 3; --quick: 1).")
    p.add_argument("--rows", type=int, help="Rows of the synthetic table (default 200000; --quick: 4000).")
    p.add_argument("--epochs", type=int, help="Epochs on the table (default 10; --quick: 2).")
    p.add_argument("--digits-epochs", type=int, help="Epochs on digits (default 40, the example's; --quick: 2).")
    p.add_argument("--wide-epochs", type=int, help="Epochs of the 1.1M-parameter MLP on the table (default 2; "
                                                    "--quick: 1).")
    p.add_argument("--memory-rows", type=int, default=bench.MEMORY_ROWS,
                   help="Rows of the memory task's table (default 1,000,000, also with --quick).")
    p.add_argument("--tasks", nargs="+", choices=ALL_TASKS, default=list(ALL_TASKS))
    p.add_argument("--only", nargs="+", choices=[c.key for c in CONTENDERS], help="Run only these contenders.")
    p.add_argument("--threads", type=int, default=1,
                   help="OMP_NUM_THREADS for every process of every contender (default 1: on a small machine shared "
                        "with other jobs, multi-threaded kernels of this small MLP mostly wait for each other, and "
                        "the noise drowns the differences; 0: leave it to each framework, i.e. cores / processes).")
    p.add_argument("--no-side", action="store_true", help="Skip the checkpoint benchmark and the profile.")
    p.add_argument("--out-dir", help="Where bench.json/.md/.png go (default benchmarks/results; "
                                     "--quick: benchmarks/results/quick).")
    a = p.parse_args()
    quick = a.quick
    repeats = a.repeats or (1 if quick else 3)
    rows = a.rows or (4000 if quick else 200_000)
    epochs = a.epochs or (2 if quick else bench.TABLE["epochs"])
    digits_epochs = a.digits_epochs or (2 if quick else bench.DIGITS["epochs"])
    wide_epochs = a.wide_epochs or (1 if quick else bench.WIDE["epochs"])
    out_dir = os.path.abspath(a.out_dir or os.path.join(HERE, "results", "quick" if quick else ""))
    timeout = 300 if quick else 1200
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(WORK_DIR, exist_ok=True)

    started = time.time()
    info = machine()
    print(f"[bench] {info['nproc']} CPU(s), {info['cpu_model']}; torch {info.get('torch')}, "
          f"horovod {info.get('horovod')}; load average {info['load_average_start'][0]:.1f}", flush=True)
    lightning = peers_available()
    info["lightning"] = lightning
    contenders = [c for c in CONTENDERS if (not c.needs_peers or lightning) and (not a.only or c.key in a.only)]

    tasks = []
    if "table" in a.tasks:
        tasks.append(bench.prepare_table(DATA_DIR, rows, epochs))
    if "wide" in a.tasks:
        tasks.append(bench.prepare_table(DATA_DIR, rows, wide_epochs, bench.WIDE))
    if "digits" in a.tasks:
        tasks.append(bench.prepare_digits(DATA_DIR, digits_epochs))
    if "memory" in a.tasks:
        tasks.append(bench.prepare_table(DATA_DIR, a.memory_rows, 1, bench.MEMORY, bench.MEMORY_ROW_GROUPS))
        tasks.append(bench.prepare_table(DATA_DIR, bench.FOOTPRINT_ROWS, 1, bench.MEMORY_FOOTPRINT,
                                         bench.FOOTPRINT_ROW_GROUPS))
    env = base_env()
    if a.threads:
        env["OMP_NUM_THREADS"] = str(a.threads)

    # A quick run keeps every contender on the (tiny) table, and on digits only what the launch
    # target needs: hvd_trainer itself. The memory task is hvd_trainer's own (np=1 and np=2, Gloo).
    per_task = {t["name"]: [c for c in contenders if t["name"] in c.tasks
                            and not (t["name"].startswith("memory") and c.controller != "gloo")
                            and not (quick and t["name"] == "digits" and c.family != "hvd_trainer")]
                for t in tasks}
    runs: List[Dict[str, Any]] = []
    for rep in range(repeats):
        for task in tasks:
            if task["name"].startswith("memory") and rep > 0:
                continue  # peak RSS does not vary from run to run as times do: one run each is enough
            mine = per_task[task["name"]]
            order = mine[rep % len(mine):] + mine[:rep % len(mine)] if mine else []
            for c in order:
                record = run_one(c, task, rep, env, timeout)
                runs.append(record)
                print(f"[bench] {task['name']:<6} {c.label:<30} run {rep + 1}/{repeats}: {describe(record)}",
                      flush=True)

    side: Dict[str, Any] = {}
    if not a.no_side:
        print("[bench] checkpoint save vs torch.save (benchmarks/checkpoint_bench.py) ...", flush=True)
        side["checkpoint"] = run_checkpoint_bench(env, 1 if quick else 5, timeout)
        table = next((t for t in tasks if t["name"] == "table"), None)
        if table is not None:
            print("[bench] profiling hvd_trainer's training steps (benchmarks/profile_step.py) ...", flush=True)
            side["profile"] = run_profile(table, env, 1 if quick else 2, timeout)

    info["load_average_end"] = os.getloadavg()
    doc = {
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "duration_s": time.time() - started, "quick": quick,
        "repeats": repeats, "machine": info, "omp_num_threads": a.threads,
        "tasks": [{k: v for k, v in t.items() if k not in ("paths", "features", "config", "task_json")} for t in tasks],
        "contenders": [c.__dict__ for c in contenders], "runs": runs, **side,
    }
    from report import write_report

    paths = write_report(doc, out_dir)
    print(f"[bench] done in {doc['duration_s'] / 60:.1f} min: " + ", ".join(os.path.relpath(x, REPO) for x in paths),
          flush=True)
    if any("error" in r for r in runs):
        print("[bench] some runs failed; see their logs above.", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
