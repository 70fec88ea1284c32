"""Summaries of a benchmark run: bench.json (every run), bench.md (tables, ratios, targets), bench.png.

run.py calls write_report(); to re-render from a saved JSON:
    python benchmarks/report.py benchmarks/results/bench.json [--out-dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any, Dict, List, Optional, Tuple

# hvd_trainer at np=N is compared with each peer at the same N.
PEERS_OF = {"hvd_trainer_np1": ["horovod_loop_np1", "torch_loop", "lightning_1"],
            "hvd_trainer_np2": ["horovod_loop_np2", "horovod_loop_np2_tuned", "ddp_np2", "lightning_ddp2"],
            "hvd_trainer_np2_mpi": ["horovod_loop_np2_mpi_tuned", "ddp_np2"]}
#: The scaling table: one process (the base), every np=2 contender, and the limit: the faster of two
#: replicas in two threads and in two processes, neither exchanging gradients.
SCALING_BASE, SCALING_LIMITS = "torch_loop", ("threads_limit", "processes_limit")
TUNED_HOROVOD = ("horovod_loop_np2_tuned", "horovod_loop_np2_mpi_tuned")
#: In memory per training row of the synthetic tables: 64 float32 features and an int64 label.
ROW_BYTES = 64 * 4 + 8


# ---- statistics ------------------------------------------------------------------------------
def _ok(runs: List[Dict[str, Any]], task: str, key: str) -> List[Dict[str, Any]]:
    return [r for r in runs if r["task"] == task and r["contender"] == key and "error" not in r]


def stat(runs: List[Dict[str, Any]], field: str) -> Optional[Tuple[float, float, float]]:
    """(min, median, max) of a field over runs, or None."""
    values = [r[field] for r in runs if r.get(field) is not None]
    if not values:
        return None
    return min(values), statistics.median(values), max(values)


def summarize(doc: Dict[str, Any]) -> Dict[str, Any]:
    """{task: {contender: {field: (min, median, max), ...}}}, ratios and targets."""
    labels = {c["key"]: c["label"] for c in doc["contenders"]}
    out: Dict[str, Any] = {"tasks": {}, "ratios": {}, "targets": []}
    for t in doc["tasks"]:
        name = t["name"]
        per: Dict[str, Any] = {}
        for key in labels:
            runs = _ok(doc["runs"], name, key)
            failed = [r for r in doc["runs"] if r["task"] == name and r["contender"] == key and "error" in r]
            if not runs and not failed:
                continue
            entry = {"runs": len(runs), "failed": len(failed)}
            for field in ("wall_s", "launch_to_first_step_s", "launch_to_process_s", "process_to_first_step_s",
                          "train_s", "eval_s", "samples_per_s", "step_us", "best_epoch_samples_per_s",
                          "best_epoch_step_us", "test_accuracy"):
                entry[field] = stat(runs, field)
            entry["peak_rss_mb"] = [max(v) for v in zip(*[r["peak_rss_mb"] for r in runs])] if runs else []
            entry["threads"] = sorted({r.get("threads") for r in runs if r.get("threads") is not None})
            per[key] = entry
        out["tasks"][name] = per
        ratios = []
        for ours, peers in PEERS_OF.items():
            a = per.get(ours)
            for peer in peers:
                b = per.get(peer)
                if not a or not b or not a["runs"] or not b["runs"]:
                    continue
                ratios.append({
                    "hvd_trainer": ours, "peer": peer,
                    "throughput_median": a["samples_per_s"][1] / b["samples_per_s"][1],
                    "throughput_best": a["samples_per_s"][2] / b["samples_per_s"][2],
                    "throughput_best_epoch": _div(a["best_epoch_samples_per_s"], b["best_epoch_samples_per_s"]),
                    "wall_median": a["wall_s"][1] / b["wall_s"][1],
                    "wall_best": a["wall_s"][0] / b["wall_s"][0],
                    "accuracy_points": 100 * (a["test_accuracy"][1] - b["test_accuracy"][1]),
                    "step_overhead_us": a["step_us"][1] - b["step_us"][1] if a["step_us"] and b["step_us"] else None,
                    "step_overhead_best_epoch_us": a["best_epoch_step_us"][1] - b["best_epoch_step_us"][1]
                    if a["best_epoch_step_us"] and b["best_epoch_step_us"] else None,
                })
        out["ratios"][name] = ratios
    out["scaling"] = {t: scaling(out["tasks"].get(t, {})) for t in ("table", "wide") if out["tasks"].get(t)}
    memory_task = next((t for t in doc["tasks"] if t["name"] == "memory"), None)
    baseline = out["tasks"].get("memory_footprint") or out["tasks"].get("table", {})
    out["memory"] = memory(out["tasks"].get("memory", {}), memory_task, baseline) if memory_task else None
    out["targets"] = targets(out)
    return out


def scaling(per: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each contender's median throughput against one process (the bare PyTorch loop) and the limit."""
    base = per.get(SCALING_BASE)
    limits = [per[k]["samples_per_s"][1] for k in SCALING_LIMITS if per.get(k, {}).get("samples_per_s")]
    limit = max(limits) if limits else None
    rows = []
    for key, e in per.items():
        if not e.get("samples_per_s"):
            continue
        sps = e["samples_per_s"][1]
        rows.append({"contender": key, "samples_per_s": sps,
                     "best_epoch_samples_per_s": e["best_epoch_samples_per_s"][1] if e["best_epoch_samples_per_s"]
                     else None,
                     "speedup": sps / base["samples_per_s"][1] if base and base.get("samples_per_s") else None,
                     "of_limit": sps / limit if limit else None})
    return rows


def memory(per: Dict[str, Any], task: Dict[str, Any], small: Dict[str, Any]) -> Dict[str, Any]:
    """Peak RSS per rank of hvd_trainer at np=1 and np=2 against the rows each rank holds; with the
    same CLI's peak on a much smaller table (the memory_footprint task, else the table task) as the
    baseline, when it ran, the part the rows cost."""
    total_rows = sum(task["rows"].values())
    out: Dict[str, Any] = {"rows": total_rows, "row_groups": (task.get("row_groups") or {}).get("training"),
                           "by_np": {}}
    for np_ in (1, 2):
        e = per.get(f"hvd_trainer_np{np_}")
        if not e or not e["peak_rss_mb"]:
            continue
        raw_mb = total_rows / np_ * ROW_BYTES / 2**20  # row groups split evenly: each rank holds 1/np
        peak = max(e["peak_rss_mb"])
        out["by_np"][np_] = {"peak_rss_mb": e["peak_rss_mb"], "raw_mb_per_rank": raw_mb, "x_raw": peak / raw_mb}
        base = small.get(f"hvd_trainer_np{np_}")
        if base and base["peak_rss_mb"]:
            baseline = max(base["peak_rss_mb"])
            out["by_np"][np_].update(baseline_mb=baseline, net_x_raw=(peak - baseline) / raw_mb)
    if 1 in out["by_np"] and 2 in out["by_np"]:
        one, two = out["by_np"][1], out["by_np"][2]
        out["np2_over_np1"] = max(two["peak_rss_mb"]) / max(one["peak_rss_mb"])
        if "baseline_mb" in one and "baseline_mb" in two:
            out["net_np2_over_np1"] = (max(two["peak_rss_mb"]) - two["baseline_mb"]) / \
                (max(one["peak_rss_mb"]) - one["baseline_mb"])
    return out


def _div(a, b) -> Optional[float]:
    """Ratio of the medians of two (min, median, max) stats."""
    return a[1] / b[1] if a and b else None


def _ratio(summary, task, ours, peer) -> Optional[Dict[str, Any]]:
    return next((r for r in summary["ratios"].get(task, []) if r["hvd_trainer"] == ours and r["peer"] == peer), None)


def targets(summary: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met (None: not measured)."""
    rows = []

    def add(text, value, met):
        rows.append({"target": text, "measured": value, "met": met})

    for np_ in (1, 2):
        r = _ratio(summary, "table", f"hvd_trainer_np{np_}", f"horovod_loop_np{np_}")
        add(f"table, np={np_}: training throughput >= 0.95 x bare Horovod loop",
            f"{r['throughput_median']:.2f} x (median of runs; fastest epochs {_x(r['throughput_best_epoch'])})"
            if r else "not run", r["throughput_median"] >= 0.95 if r else None)
    r = _ratio(summary, "table", "hvd_trainer_np1", "torch_loop")
    add("table, np=1: end-to-end wall time <= 1.5 x bare PyTorch loop",
        f"{r['wall_median']:.2f} x (median; best runs {r['wall_best']:.2f} x)" if r else "not run",
        r["wall_median"] <= 1.5 if r else None)
    r = _ratio(summary, "table", "hvd_trainer_np1", "lightning_1")
    add("table, np=1: at least 2 x faster end to end than Lightning on 1 device",
        f"{1 / r['wall_median']:.2f} x faster (median; best runs {1 / r['wall_best']:.2f} x)" if r
        else "not run (make bench-peers)", (1 / r["wall_median"]) >= 2 if r else None)
    accs = [x for x in summary["ratios"].get("table", [])]
    if accs:
        worst = max(accs, key=lambda x: abs(x["accuracy_points"]))
        add("table: same test accuracy as every peer (+-1 point)",
            f"largest gap {worst['accuracy_points']:+.2f} points ({worst['hvd_trainer']} vs {worst['peer']})",
            abs(worst["accuracy_points"]) <= 1.0)
    for task, least in (("table", 1.5), ("wide", 1.2)):
        per = summary["tasks"].get(task, {})
        tuned = [per[k] for k in TUNED_HOROVOD if per.get(k) and per[k]["samples_per_s"]]
        ddp = per.get("ddp_np2")
        if tuned and ddp and ddp["samples_per_s"]:
            best = max(e["samples_per_s"][1] for e in tuned) / ddp["samples_per_s"][1]
            add(f"{task}, np=2: tuned Horovod (the better of Gloo and MPI) >= {least} x torchrun DDP",
                f"{best:.2f} x (median runs)", best >= least)
        else:
            add(f"{task}, np=2: tuned Horovod >= {least} x torchrun DDP", "not run", None)
    r = _ratio(summary, "table", "hvd_trainer_np2_mpi", "horovod_loop_np2_mpi_tuned")
    add("table, np=2, MPI: training throughput >= 0.97 x bare Horovod loop (tuned, same controller)",
        f"{r['throughput_median']:.2f} x (median; fastest epochs {_x(r['throughput_best_epoch'])})" if r else "not run",
        r["throughput_median"] >= 0.97 if r else None)
    mem = summary.get("memory") or {"by_np": {}}
    for np_, m in sorted(mem["by_np"].items()):
        add(f"memory, np={np_}: peak RSS per rank <= 3 x the rows it holds ({m['raw_mb_per_rank']:.0f} MB)",
            f"{max(m['peak_rss_mb']):.0f} MB = {m['x_raw']:.2f} x", m["x_raw"] <= 3.0)
    if mem.get("np2_over_np1") is not None:
        add("memory: peak RSS per rank at np=2 <= 0.55 x np=1", f"{mem['np2_over_np1']:.2f} x",
            mem["np2_over_np1"] <= 0.55)
    digits = summary["tasks"].get("digits", {})
    for np_ in (1, 2):
        d = digits.get(f"hvd_trainer_np{np_}")
        value = d["launch_to_first_step_s"] if d else None
        add(f"digits, np={np_}: launch to first training step < 5 s",
            f"{value[1]:.2f} s (median; min {value[0]:.2f} s)" if value else "not run",
            value[1] < 5.0 if value else None)
    return rows


def _x(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.2f} x"


# ---- Markdown --------------------------------------------------------------------------------------
def _mm(v, fmt="{:.1f}") -> str:
    return "–" if v is None else f"{fmt.format(v[0])} / {fmt.format(v[1])}"


def markdown(doc: Dict[str, Any], summary: Dict[str, Any]) -> str:
    m = doc["machine"]
    labels = {c["key"]: c["label"] for c in doc["contenders"]}
    lines = [f"# hvd_trainer benchmark{' (quick smoke run)' if doc['quick'] else ''}", ""]
    lines.append(f"Run {doc['created']}, {doc['duration_s'] / 60:.1f} min, {doc['repeats']} run(s) of each contender "
                 "per task, alternating (the order rotates every repeat). Machine: "
                 f"{m['nproc']} CPU(s) ({m['cpu_model']}), {m.get('mem_total_gb', '?')} GB; torch {m.get('torch')}, "
                 f"Horovod {m.get('horovod')} (Gloo), Lightning {m.get('lightning') or 'not installed'}; "
                 f"Python {m['python']}; hvd_trainer at {m.get('commit', '?')}. Load average {m['load_average_start'][0]:.1f} at the start, "
                 f"{m['load_average_end'][0]:.1f} at the end (the machine is shared: read the ratios, not the "
                 "absolute times).")
    lines.append("")
    threads = doc.get("omp_num_threads")
    lines.append("Every contender trains the same model the same way: the same Parquet files, z-scored with the "
                 "training split's statistics; the same MLP (ReLU), Adam, batch size per process, epochs and seed "
                 "(0); the learning rate multiplied by the number of processes (hvd_trainer's "
                 "`learning_rate_scaling: linear`, Horovod's convention); no gradient clipping (hvd_trainer's "
                 "default `clipglobalnorm: 0.5` is switched off, as no other contender clips); no early stop; "
                 "validation every epoch; test accuracy of the final model. "
                 + (f"OMP_NUM_THREADS={threads} for every process. " if threads
                    else "Threads: each framework's default (cores / processes). ")
                 + "hvd_trainer and Lightning keep their defaults otherwise (checkpoint every epoch, TensorBoard "
                 "logs, progress bar); hvd_trainer also evaluates the test set at every evaluation.")
    lines.append("")
    lines.append("*wall*: the whole process (horovodrun included) from launch to exit. *first step*: launch to "
                 "the first training step (imports, data load, preprocessing, setup), split into the launcher and "
                 "interpreter start (horovodrun, python) and the time inside the training process. *fastest epochs*: "
                 "throughput of each run's fastest epoch (median over runs), the figure least disturbed by other "
                 "jobs on a shared machine. *train*: the training loop "
                 "without evaluation and checkpoints; samples/s = training rows x epochs / train.")
    for t in doc["tasks"]:
        name = t["name"]
        per = summary["tasks"].get(name, {})
        lines += ["", f"## {name}: {t['rows']['training']:,} training rows, {t['n_features']} features, "
                      f"{t['n_classes']} classes; MLP {t['n_features']}-" + "-".join([str(t['hidden'])] * t['num_layers'])
                  + f"-{t['n_classes']}, dropout {t['dropout']}, Adam {t['learning_rate']}, batch {t['batch_size']}, "
                  f"{t['epochs']} epochs", ""]
        lines.append("| contender | runs | wall s (min / median) | first step s (min / median) | of which launcher "
                     "/ in process (median) | train s (min / median) | samples/s: median run / fastest epoch | step us (median) "
                     "| test accuracy (median) | peak RSS MB per rank |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for key, e in per.items():
            runs = f"{e['runs']}" + (f" ({e['failed']} failed)" if e["failed"] else "")
            sps = "–" if e["samples_per_s"] is None else f"{e['samples_per_s'][1]:,.0f}" + (
                f" / {e['best_epoch_samples_per_s'][1]:,.0f}" if e["best_epoch_samples_per_s"] else "")
            step = "–" if e["step_us"] is None else f"{e['step_us'][1]:,.0f}"
            acc = "–" if e["test_accuracy"] is None else f"{e['test_accuracy'][1]:.4f}"
            rss = " / ".join(f"{x:.0f}" for x in e["peak_rss_mb"]) or "–"
            split = "–" if e["launch_to_process_s"] is None else \
                f"{e['launch_to_process_s'][1]:.2f} / {e['process_to_first_step_s'][1]:.2f}"
            lines.append(f"| {labels[key]} | {runs} | {_mm(e['wall_s'])} | {_mm(e['launch_to_first_step_s'], '{:.2f}')} "
                         f"| {split} | {_mm(e['train_s'], '{:.2f}')} | {sps} | {step} | {acc} | {rss} |")
        ratios = summary["ratios"].get(name, [])
        if ratios:
            lines += ["", "| hvd_trainer / peer | training throughput: median run, fastest epochs | wall time: "
                          "median, best run | step time difference us: median run, fastest epochs "
                          "| test accuracy difference (points) |", "|---|---|---|---|---|"]
            for r in ratios:
                over = " / ".join("–" if v is None else f"{v:+,.0f}"
                                  for v in (r["step_overhead_us"], r["step_overhead_best_epoch_us"]))
                lines.append(f"| {labels[r['hvd_trainer']]} / {labels[r['peer']]} | {r['throughput_median']:.2f} x, "
                             f"{_x(r['throughput_best_epoch'])} | {r['wall_median']:.2f} x, {r['wall_best']:.2f} x "
                             f"| {over} | {r['accuracy_points']:+.2f} |")
    lines += scaling_markdown(summary, labels)
    lines += memory_markdown(summary)
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for row in summary["targets"]:
        met = {True: "yes", False: "**no**", None: "–"}[row["met"]]
        lines.append(f"| {row['target']} | {row['measured']} | {met} |")
    ck = doc.get("checkpoint")
    if ck:
        lines += ["", "## Checkpoint save (benchmarks/checkpoint_bench.py)", ""]
        if "error" in ck:
            lines.append(f"Failed: {ck['error'][-500:]}")
        else:
            ms = lambda v: f"{v * 1000:.0f} ms"  # noqa: E731
            lines += [f"A {ck['size_mb']:.0f} MB model + Adam state, median of {ck['repeats']}.", "",
                      "| plain torch.save | in the loop (atomic, fsync) | ratio | in the background: training blocked "
                      "| ratio | until on disk | resume load |",
                      "|---|---|---|---|---|---|---|",
                      f"| {ms(ck['plain_torch_save_s'])} | {ms(ck['in_loop_save_s'])} | {ck['ratio_in_loop']:.2f} "
                      f"| {ms(ck['background_blocking_s'])} | {ck['ratio_background_blocking']:.2f} "
                      f"| {ms(ck['background_until_durable_s'])} | {ms(ck['resume_load_s'])} |"]
    prof = doc.get("profile")
    if prof:
        lines += ["", "## Where a training step goes (benchmarks/profile_step.py, cProfile, table task, np=1)", ""]
        if "error" in prof:
            lines.append(f"Failed: {prof['error'][-500:]}")
        else:
            lines.append(f"{prof['steps']} steps; {prof['profiled_us_per_step']:,.0f} us per step under cProfile "
                         f"(which inflates Python-heavy parts); {prof['module_calls_per_step']:.0f} nn.Module calls "
                         f"per step for {prof['input_features']} input features.")
            lines += ["", "| part of a step | cumulative us/step | calls/step |", "|---|---|---|"]
            lines += [f"| {p['part']} | {p['cum_us_per_step']:,.0f} | {p['calls_per_step']:.1f} |" for p in prof["parts"]]
            lines += ["", "| top functions by own time | own us/step | cumulative us/step | calls/step |",
                      "|---|---|---|---|"]
            lines += [f"| `{r['function']}` | {r['own_us_per_step']:,.1f} | {r['cum_us_per_step']:,.1f} "
                      f"| {r['calls_per_step']:.1f} |" for r in prof["top_own_time"][:15]]
    failed = [r for r in doc["runs"] if "error" in r]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['task']} {r['contender']} run {r['repeat'] + 1}: exit {r['returncode']}, log {r['log']}"
                  for r in failed]
    return "\n".join(lines) + "\n"


def scaling_markdown(summary: Dict[str, Any], labels: Dict[str, str]) -> List[str]:
    if not summary.get("scaling"):
        return []
    lines = ["", "## Scaling: np=1 -> np=2 on one machine", "",
             "Median training throughput. *speedup*: against one process (the bare PyTorch loop, one thread). "
             "*of the limit*: against the faster of two replicas trained by two threads of one process and by "
             "two processes, neither exchanging gradients: what np=2 would reach if exchanging gradients cost "
             "nothing (threads contend for the GIL between short kernels, so on a small model the processes are "
             "faster). *tuned*: the Horovod and Open MPI variables hvd_trainer chooses itself "
             "(hvd_trainer/distributed/knobs.py; each run's are in bench.json under `knobs`)."]
    for task, rows in summary["scaling"].items():
        lines += ["", f"**{task}**", "", "| contender | samples/s: median run / fastest epoch | speedup | of the limit |",
                  "|---|---|---|---|"]
        for r in rows:
            best = f" / {r['best_epoch_samples_per_s']:,.0f}" if r["best_epoch_samples_per_s"] else ""
            lines.append(f"| {labels[r['contender']]} | {r['samples_per_s']:,.0f}{best} | {_x(r['speedup'])} "
                         f"| {_x(r['of_limit'])} |")
    return lines


def memory_markdown(summary: Dict[str, Any]) -> List[str]:
    mem = summary.get("memory")
    if not mem or not mem["by_np"]:
        return []
    lines = ["", f"## Memory: hvd_trainer's CLI on a {mem['rows']:,}-row table", "",
             f"Peak RSS (VmHWM at exit) of every rank, training a few steps; Parquet files of "
             f"{mem['row_groups']} row groups (each rank of np=2 reads only its own). *raw*: the rows the rank "
             f"holds, {ROW_BYTES} bytes each (64 float32 features, an int64 label).",
             "*baseline*: the same CLI's peak on 2,000 rows of the same table (the memory_footprint task; the table "
             "task when that did not run): what a rank needs before any rows, about 370 MB here (torch about 220, "
             "torch._dynamo, which every torch optimizer imports when it is built, about 70, pyarrow about 35, "
             "Horovod, an evaluation); *net*: peak less baseline, the memory the rows cost.", "",
             "| np | peak RSS MB per rank | raw MB per rank | peak / raw | baseline MB | net / raw |",
             "|---|---|---|---|---|---|"]
    for np_, m in sorted(mem["by_np"].items()):
        base = f"{m['baseline_mb']:.0f} | {m['net_x_raw']:.2f}" if "baseline_mb" in m else "– | –"
        lines.append(f"| {np_} | {' / '.join(f'{x:.0f}' for x in m['peak_rss_mb'])} | {m['raw_mb_per_rank']:.0f} "
                     f"| {m['x_raw']:.2f} | {base} |")
    if mem.get("np2_over_np1") is not None:
        net = f"; net of the baseline: {mem['net_np2_over_np1']:.2f} x" if mem.get("net_np2_over_np1") else ""
        lines += ["", f"np=2 / np=1, per rank: {mem['np2_over_np1']:.2f} x{net}."]
    return lines


# ---- chart ---------------------------------------------------------------------------------------------
def chart(doc: Dict[str, Any], summary: Dict[str, Any], path: str) -> Optional[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - used through matplotlib.ticker below

    labels = {c["key"]: c["label"] for c in doc["contenders"]}
    panels = []
    table, digits = summary["tasks"].get("table", {}), summary["tasks"].get("digits", {})
    wide = summary["tasks"].get("wide", {})
    if table:
        panels.append(("table: training throughput (samples/s)", table, "samples_per_s"))
        panels.append(("table: wall time, whole process (s)", table, "wall_s"))
    if wide:
        panels.append(("wide (1.1M parameters): samples/s", wide, "samples_per_s"))
    if digits:
        panels.append(("digits: launch to first step (s)", digits, "launch_to_first_step_s"))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6))
    axes = [axes] if len(panels) == 1 else list(axes)
    for ax, (title, per, field) in zip(axes, panels):
        keys = [k for k, e in per.items() if e.get(field)]
        med = [per[k][field][1] for k in keys]
        lo = [per[k][field][1] - per[k][field][0] for k in keys]
        hi = [per[k][field][2] - per[k][field][1] for k in keys]
        colors = ["#d62728" if k.startswith("hvd_trainer") else "#2ca02c" if k in SCALING_LIMITS
                  else "#7f7f7f" if "loop" in k else "#1f77b4" for k in keys]
        ax.barh(range(len(keys)), med, xerr=[lo, hi], color=colors, capsize=3, error_kw={"elinewidth": 0.8})
        ax.set_yticks(range(len(keys)))
        ax.set_yticklabels([labels[k] for k in keys], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        top = max(per[k][field][2] for k in keys)
        ax.set_xlim(0, top * 1.25)
        if top >= 10000:
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:.0f}k"))
        if field == "launch_to_first_step_s":
            ax.axvline(5.0, color="black", linestyle="--", linewidth=0.8)
            ax.text(5.0, len(keys) - 0.5, " target 5 s", fontsize=7, va="bottom")
        for i, k in enumerate(keys):
            v = med[i]
            ax.text(per[k][field][2] + top * 0.01, i, f"{v:,.0f}" if v >= 100 else f"{v:.1f}", va="center", fontsize=7)
    m = doc["machine"]
    fig.suptitle(f"hvd_trainer vs bare loops, DDP and Lightning: median of {doc['repeats']} (bars: min..max); "
                 f"{m['nproc']} CPU(s), {m['cpu_model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(doc: Dict[str, Any], out_dir: str) -> List[str]:
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(doc)
    doc = {**doc, "summary": summary}
    paths = [os.path.join(out_dir, "bench.json"), os.path.join(out_dir, "bench.md")]
    with open(paths[0], "w") as fh:
        json.dump(doc, fh, indent=1)
    with open(paths[1], "w") as fh:
        fh.write(markdown(doc, summary))
    png = chart(doc, summary, os.path.join(out_dir, "bench.png"))
    if png:
        paths.append(png)
    return paths


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json_path")
    p.add_argument("--out-dir")
    a = p.parse_args()
    with open(a.json_path) as fh:
        doc = json.load(fh)
    doc.pop("summary", None)
    for path in write_report(doc, a.out_dir or os.path.dirname(os.path.abspath(a.json_path))):
        print(path)


if __name__ == "__main__":
    main()
