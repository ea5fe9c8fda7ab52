"""Learning curves of one or more run folders in one PNG.

    python -m rtrl.rl.plot OUT.png RUN_DIR [RUN_DIR ...]     # what start_plot runs beside the caller
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path



def plot_runs(run_dirs: list[str | Path], out: str | Path, metric: str = "mean_return") -> Path:
    """Plot ``metric`` against frames for each run (label: core, M, seed; and the env when the runs
    differ in it); returns the PNG path. Raises ``RunError`` for a folder without metrics and
    ``ValueError`` for a metric that a run has not logged (naming the ones it has)."""
    runs = []
    for d in map(Path, run_dirs):
        metrics, cfg_file = d / "metrics.csv", d / "config.json"
        if not metrics.is_file() or not cfg_file.is_file():
            from rtrl.runs import RunError  # here: drawing needs no torch, which rtrl.runs imports

            raise RunError(f"{d} is not a run folder with metrics (no metrics.csv/config.json)")
        with open(metrics) as f:
            reader = csv.DictReader(f)
            rows = list(reader)
        if metric not in (reader.fieldnames or []):
            have = ", ".join(k for k in reader.fieldnames or [] if k not in ("step", "time"))
            raise ValueError(f"{d} has no metric {metric!r}; its metrics.csv has: {have}")
        rows = [r for r in rows if r.get(metric) not in (None, "", "nan")]
        runs.append((json.loads(cfg_file.read_text()), rows))
    envs = list(dict.fromkeys(str(cfg.get("env")) for cfg, _ in runs))  # in the order given, once each
    title = envs[0] if len(envs) == 1 else "several environments: " + ", ".join(envs)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    empty = []
    for cfg, rows in runs:
        algo = "PPO" if cfg.get("algo") == "ppo" else "R2AC"
        label = f"{algo} {cfg.get('core')} M={cfg.get('unroll')} seed={cfg.get('seed')}"
        label = label if len(envs) == 1 else f"{cfg.get('env')}: {label}"
        if not rows:
            empty.append(label)
        ax.plot([float(r["step"]) for r in rows], [float(r[metric]) for r in rows],
                label=label + (" (no value logged)" if not rows else ""))
    if empty and metric == "mean_return":  # undefined until a training episode ends: say so, not empty axes
        ax.text(0.5, 0.5, f"no training episode finished in {len(empty)} of {len(runs)} run(s):\nepisodes are "
                "longer than each env's share of the frames;\nraise --total-frames or lower --num-envs",
                transform=ax.transAxes, ha="center", va="center", fontsize=9, color="firebrick")
    ax.set_xlabel("frames (agent steps, all streams)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110, metadata={"Title": title})
    plt.close(fig)
    return out


def start_plot(run_dirs: list[str | Path], out: str | Path) -> subprocess.Popen:
    """Draw :func:`plot_runs`'s PNG in a new process (matplotlib's import and drawing, ~0.5 s, run on
    another core while the caller goes on); ``.wait()`` on the result before relying on the file."""
    return subprocess.Popen([sys.executable, "-m", "rtrl.rl.plot", str(out), *map(str, run_dirs)],
                            stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    plot_runs(sys.argv[2:], sys.argv[1])
