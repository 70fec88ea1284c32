"""Learning curves from training_statistics.json: one panel per (feature, metric), one line per split."""
from __future__ import annotations

import json
import math
import os


def learning_curves(statistics_path: str, output_path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(statistics_path) as fh:
        stats = json.load(fh)
    panels = []
    for split in ("training", "validation", "test"):
        for feature, metrics in (stats.get(split) or {}).items():
            for metric in metrics:
                if (feature, metric) not in panels:
                    panels.append((feature, metric))
    if not panels:
        from hvd_trainer.errors import DataError

        raise DataError(f"{statistics_path} holds no metric history (did the run evaluate at least once?).")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (feature, metric) in zip(axes.flat, panels):
        for split, style in (("training", "-"), ("validation", "--"), ("test", ":")):
            series = (stats.get(split) or {}).get(feature, {}).get(metric)
            if series:
                ax.plot([s for _, s, _ in series], [v for _, _, v in series], style, marker=".", label=split)
        ax.set_title(f"{feature} {metric}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    fig.savefig(output_path, dpi=90)
    plt.close(fig)
    return output_path
