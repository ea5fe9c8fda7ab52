"""R2AC on small memory tasks: RTRL-eLSTM vs TBPTT-eLSTM (short and long M) vs LSTM vs feedforward.

    python experiments/memory/run.py                       # 2 tasks x 5 agents x 3 seeds, 2 runs at a time
    python experiments/memory/run.py --seeds 0 --frames 20000 --out runs/smoke   # smoke run

Each run is an `rtrl train` process with its own run folder under --out (finished runs are
reused, so re-running resumes the sweep). Writes docs/memory_table.md and docs/memory.png. The
score is the greedy evaluation return on held-out seeds (100 episodes) at the end of training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TASKS = ["rtrl-Recall-v0", "rtrl-Recall6-v0"]
AGENTS = [  # label, core, M
    ("RTRL eLSTM, M=10", "rtrl-elstm", 10),
    ("RTRL eLSTM, M=3", "rtrl-elstm", 3),
    ("TBPTT eLSTM, M=10", "tbptt-elstm", 10),
    ("TBPTT eLSTM, M=3", "tbptt-elstm", 3),
    ("full-episode BPTT eLSTM, M=episode", "bptt-elstm", 0),  # 0: M = the episode length
    ("LSTM (TBPTT), M=10", "lstm", 10),
    ("feedforward, M=10", "none", 10),
]


def episode_length(env: str) -> int:
    delay = env.removeprefix("rtrl-Recall").removesuffix("-v0")
    return (int(delay) if delay else 3) + 2


def run_one(out: Path, env: str, core: str, m: int, seed: int, frames: int) -> dict:
    m = m or episode_length(env)
    run_dir = out / f"{env}-{core}-M{m}-s{seed}"
    if not (run_dir / "result.json").exists():
        cmd = [sys.executable, "-m", "rtrl.cli", "train", "--preset", "small", "--env", env, "--core", core,
               "--unroll", str(m),
               "--seed", str(seed), "--total-frames", str(frames), "--run-dir", str(run_dir), "--no-progress"]
        if run_dir.exists():
            cmd.append("--resume")
        print(" ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((run_dir / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/memory"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    jobs = [(env, core, m, s) for env in TASKS for _, core, m in AGENTS for s in args.seeds]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda j: run_one(args.out, *j, args.frames), jobs))
    by = {j: r for j, r in zip(jobs, results)}

    lines = ["| agent | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for label, core, m in AGENTS:
        cells = []
        for env in TASKS:
            g = [by[(env, core, m, s)]["eval"]["greedy"]["mean"] for s in args.seeds]
            cells.append(f"{statistics.mean(g):.2f} ± {statistics.pstdev(g):.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cmd = "python experiments/memory/run.py" + ("" if args.seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, args.seeds))}") \
        + ("" if args.frames == 200_000 else f" --frames {args.frames}")
    args.docs.mkdir(exist_ok=True)
    (args.docs / "memory_table.md").write_text(
        f"Made by `{cmd}` ({args.frames:,} frames per run; greedy return on held-out seeds, mean ± std over "
        f"seeds {args.seeds}; optimum 1, a memoryless policy 0 in expectation):\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))

    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TASKS), figsize=(5.5 * len(TASKS), 3.8), squeeze=False)
    for ax, env in zip(axes[0], TASKS):
        for i, (label, core, m) in enumerate(AGENTS):
            for s in args.seeds:
                with open(args.out / f"{env}-{core}-M{m or episode_length(env)}-s{s}" / "metrics.csv") as f:
                    rows = list(csv.DictReader(f))
                ax.plot([float(r["step"]) for r in rows], [float(r["mean_return"]) for r in rows], color=f"C{i}",
                        alpha=0.7, label=label if s == args.seeds[0] else None)
        ax.set_title(env)
        ax.set_xlabel("frames")
        ax.set_ylabel("training return (last 100 episodes)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.docs / "memory.png", dpi=110)


if __name__ == "__main__":
    main()
