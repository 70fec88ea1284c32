"""`make demo` reads like a tool: scripts/demo.sh itself, on 2 ranks, with a fresh matplotlib cache.

The built-in digits example it trains reaches 0.95 test accuracy and draws its learning curves.
No rank prefixes (it launches with plain mpirun, not horovodrun's tagged output), one line per
evaluation, one table (the best checkpoint's) at the end, no library chatter, under 40 lines.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import REPO, launch_env, require_horovod

MAX_LINES = 40


def test_the_demo_trains_the_example_with_no_rank_prefixes_and_one_line_per_evaluation(tmp_path):
    require_horovod()
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = launch_env({"HVD_TRAINER_VENV": venv, "MPLCONFIGDIR": str(tmp_path / "mpl"),  # matplotlib's first run
                      "HVD_TRAINER_CACHE": str(tmp_path / "cache")})
    # Bytes, not text: text mode would turn the progress bar's \r (a redraw on the same line) into new lines.
    proc = subprocess.Popen(["bash", os.path.join(REPO, "scripts", "demo.sh"), "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("make demo's launch did not finish in 600 s:\n" + proc.communicate()[0].decode()[-4000:])
    terminal = out.decode()
    assert proc.returncode == 0, terminal[-4000:]
    # Lines as a terminal shows them: the bar redraws itself on its own line with \r.
    lines = terminal.rstrip("\n").split("\n")
    assert len(lines) < MAX_LINES, terminal
    assert not re.search(r"\[\d+(,\d+)?\]<std(out|err)>:", terminal), "no rank prefixes"
    run = tmp_path / "results" / "digits_example"
    progress = json.load(open(run / "model" / "training_progress.json"))
    assert progress["best_eval_test_metrics"]["label"]["accuracy"] >= 0.95
    assert (run / "learning_curves.png").exists()
    stats = json.load(open(run / "training_statistics.json"))
    evaluations = len(stats["validation"]["label"]["loss"])
    assert len(re.findall(r"step \d+/\d+ epoch \d+ \| train loss", terminal)) == evaluations > 1
    assert terminal.count("│ label") == 1 and "│ combined" not in terminal, "one table, at the end"
    assert terminal.count("Finished:") == 1 and "learning_curves.png" in terminal
    for noise in ("fontManager", "font cache", "Matplotlib", "Warning:", "Traceback"):
        assert noise not in terminal, noise
