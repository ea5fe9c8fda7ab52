"""Learning curves of one or more run folders in one PNG."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def plot_runs(run_dirs: list[str | Path], out: str | Path, metric: str = "mean_return") -> Path:
    """Plot ``metric`` against frames for each run (label: core, M, seed); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    env = None
    for d in map(Path, run_dirs):
        metrics, cfg_file = d / "metrics.csv", d / "config.json"
        if not metrics.is_file() or not cfg_file.is_file():
            raise FileNotFoundError(f"{d} is not a run folder with metrics (no metrics.csv/config.json)")
        cfg = json.loads(cfg_file.read_text())
        env = cfg.get("env", env)
        with open(metrics) as f:
            rows = [r for r in csv.DictReader(f) if r.get(metric) not in (None, "", "nan")]
        ax.plot([float(r["step"]) for r in rows], [float(r[metric]) for r in rows],
                label=f"{cfg.get('core')} M={cfg.get('unroll')} seed={cfg.get('seed')}")
    ax.set_xlabel("frames (agent steps, all streams)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(str(env))
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
