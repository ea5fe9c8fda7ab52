"""Which cell, which rule: element-wise cells with exact RTRL against a dense LSTM with SnAp-1,
UORO and truncated BPTT, at equal parameter count; and PPO against IMPALA with the same RTRL cores.

    python experiments/rules/run.py                      # all three parts, 3 seeds, 2 runs at a time
    python experiments/rules/run.py --parts memory --seeds 0 --frames 20000 --out runs/smoke   # smoke run

Parts:
* ``copy``: the copy task (level 4, sequences of 8 steps), every method updating its weights
  online at every step (truncated BPTT: span 2), models of about the same parameter count.
* ``memory``: R2AC on two memory tasks (Recall with delays 3 and 6) with M = 3, shorter than
  the memory span: what only a learning rule with credit beyond the segment can solve. Agents of
  about the same total parameter count.
* ``ppo``: PPO and IMPALA (R2AC) with the same exact-RTRL cores on two popgym tasks.
* ``lag``: R2AC on popgym RepeatPreviousEasy (output the card seen 4 steps ago), the fixed lag
  that an element-wise real recurrence learns slowly: eLSTM, LRU and RTU with exact RTRL and
  with truncated BPTT (M = 10), and a dense LSTM (truncated BPTT), about the same parameter
  count, a longer budget.

Each run is an ``rtrl copy`` / ``rtrl train`` process with its own run folder under --out;
finished runs are reused, so re-running resumes the sweep. Writes docs/rules_table.md and
docs/rules.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import old_preset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from stats import agent_parameters, hidden_for  # noqa: E402  (experiments/stats.py, shared by the studies)

COPY_LEVEL, COPY_SEQUENCES = 4, 10_000
COPY_METHODS = [  # label, method, cell, update_every
    ("eLSTM, exact RTRL", "rtrl", "elstm", 1),
    ("LRU, exact RTRL", "rtrl", "lru", 1),
    ("RTU, exact RTRL", "rtrl", "rtu", 1),
    ("dense LSTM, SnAp-1", "snap1", "elstm", 1),
    ("dense LSTM, UORO", "uoro", "elstm", 1),
    ("dense LSTM, TBPTT span 2", "lstm", "elstm", 2),
]
MEMORY_TASKS = ["rtrl-Recall-v0", "rtrl-Recall6-v0"]
MEMORY_CORES = [  # label, core
    ("eLSTM, exact RTRL", "rtrl-elstm"),
    ("LRU, exact RTRL", "rtrl-lru"),
    ("RTU, exact RTRL", "rtrl-rtu"),
    ("dense LSTM, SnAp-1", "snap1-lstm"),
    ("dense LSTM, UORO", "uoro-lstm"),
    ("dense LSTM, TBPTT", "lstm"),
    ("feedforward", "none"),
]
MEMORY_M, MEMORY_FRAMES = 3, 100_000
PPO_TASKS = ["popgym-RepeatFirstEasy-v0", "popgym-PositionOnlyCartPoleEasy-v0"]
PPO_CORES = [("eLSTM", "rtrl-elstm"), ("LRU", "rtrl-lru")]
PPO_FRAMES = 60_000
LAG_TASK = "popgym-RepeatPreviousEasy-v0"
LAG_CORES = [("eLSTM, exact RTRL", "rtrl-elstm"), ("LRU, exact RTRL", "rtrl-lru"), ("RTU, exact RTRL", "rtrl-rtu"),
             ("eLSTM, TBPTT", "tbptt-elstm"), ("LRU, TBPTT", "tbptt-lru"), ("RTU, TBPTT", "tbptt-rtu"),
             ("dense LSTM, TBPTT", "lstm")]
LAG_RUNS = [(label, core, 10) for label, core in LAG_CORES] + [  # and M = 3, shorter than the lag of 4
    (label, core, 3) for label, core in LAG_CORES if core in ("rtrl-lru", "tbptt-lru", "rtrl-rtu", "tbptt-rtu")]
LAG_FRAMES = 1_000_000
PARTS = ["copy", "memory", "ppo", "lag"]


def run(cmd: list[str], run_dir: Path, result: str) -> Optional[dict]:
    """Run (or resume) one job; None if it failed (its error is printed; the sweep goes on)."""
    if not (run_dir / result).exists():
        if run_dir.exists():
            cmd = cmd + ["--resume"]
        print(" ".join(cmd[3:]), flush=True)
        if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
            print(f"FAILED: {' '.join(cmd[3:])}", flush=True)
            return None
    return json.loads((run_dir / result).read_text())


def copy_dir(out: Path, method: str, cell: str, k: int, seed: int) -> Path:
    return out / "copy" / f"{method}-{cell}-k{k}-s{seed}"


def train_dir(out: Path, part: str, env: str, core: str, seed: int, extra: list[str]) -> Path:
    return out / part / f"{env}-{core}-{'-'.join(extra).replace('--', '')}-s{seed}"


def copy_job(out: Path, method: str, cell: str, k: int, seed: int, params: int) -> dict:
    d = copy_dir(out, method, cell, k, seed)
    return run([sys.executable, "-m", "rtrl.cli", "copy", "--method", method, "--cell", cell, "--update-every", str(k),
                "--level", str(COPY_LEVEL), "--params", str(params), "--max-sequences", str(COPY_SEQUENCES),
                "--seed", str(seed), "--run-dir", str(d), "--no-progress"], d, "result.json")


def train_job(out: Path, part: str, env: str, core: str, seed: int, frames: int, extra: list[str]) -> dict:
    d = train_dir(out, part, env, core, seed, extra)
    return run([sys.executable, "-m", "rtrl.cli", "train", *old_preset(extra), "--env", env, "--core", core,
                "--seed", str(seed), "--total-frames", str(frames), "--run-dir", str(d), "--no-progress", *extra],
               d, "result.json")


def mean_std(xs: list[float], scale: float = 1.0, digits: int = 2, seeds: int = 3) -> str:
    """Mean ± std over seeds; says how many seeds when fewer than asked for finished."""
    if not xs:
        return "—"
    text = f"{statistics.mean(xs) * scale:.{digits}f} ± {statistics.pstdev(xs) * scale:.{digits}f}"
    return text if len(xs) == seeds else f"{text} (n = {len(xs)})"


def curve(run_dir: Path, key: str) -> tuple[list[float], list[float]]:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return [float(r["step"]) for r in rows], [float(r[key]) for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=PARTS, choices=PARTS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, default=0, help="override the frame budget of the RL parts")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/rules"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true", help="write the tables from the finished runs only")
    args = ap.parse_args()
    from rtrl.tasks.copy import count_parameters

    copy_params = count_parameters("rtrl", 64, "elstm")  # the eLSTM of 64 units
    mem_params = agent_parameters(MEMORY_TASKS[0], "rtrl-elstm", 64)
    mem_hidden = {core: hidden_for(MEMORY_TASKS[0], core, mem_params) for _, core in MEMORY_CORES}
    lag_params = agent_parameters(LAG_TASK, "rtrl-elstm", 64)
    lag_hidden = {core: hidden_for(LAG_TASK, core, lag_params) for _, core in LAG_CORES}

    jobs = []  # (part, key, run folder, callable); the cheap parts first, every seed of a part together
    if "memory" in args.parts:
        for s in args.seeds:
            for env in MEMORY_TASKS:
                for _, core in MEMORY_CORES:
                    extra = ["--unroll", str(MEMORY_M), "--hidden-size", str(mem_hidden[core])]
                    jobs.append(("memory", (env, core, s), train_dir(args.out, "memory", env, core, s, extra),
                                 lambda env=env, core=core, s=s, extra=extra: train_job(
                                     args.out, "memory", env, core, s, args.frames or MEMORY_FRAMES, extra)))
    if "ppo" in args.parts:
        for s in args.seeds:
            for env in PPO_TASKS:
                for _, core in PPO_CORES:
                    for algo in ("impala", "ppo"):
                        extra = ["--algo", algo]
                        jobs.append(("ppo", (env, core, algo, s), train_dir(args.out, "ppo", env, core, s, extra),
                                     lambda env=env, core=core, s=s, extra=extra: train_job(
                                         args.out, "ppo", env, core, s, args.frames or PPO_FRAMES, extra)))
    if "lag" in args.parts:
        for s in args.seeds:
            for _, core, m in LAG_RUNS:
                extra = ["--hidden-size", str(lag_hidden[core])] + (["--unroll", str(m)] if m != 10 else [])
                jobs.append(("lag", (core, m, s), train_dir(args.out, "lag", LAG_TASK, core, s, extra),
                             lambda core=core, s=s, extra=extra: train_job(
                                 args.out, "lag", LAG_TASK, core, s, args.frames or LAG_FRAMES, extra)))
    if "copy" in args.parts:
        for s in args.seeds:
            jobs += [("copy", (m, c, k, s), copy_dir(args.out, m, c, k, s),
                      lambda m=m, c=c, k=k, s=s: copy_job(args.out, m, c, k, s, copy_params))
                     for _, m, c, k in COPY_METHODS]
    if args.report_only:  # tables from the runs that finished; a cell says how many seeds it holds
        results = {(p, k): json.loads((d / "result.json").read_text()) for p, k, d, _ in jobs
                   if (d / "result.json").exists()}
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip([(p, k) for p, k, _, _ in jobs], pool.map(lambda j: j[3](), jobs)))
        results = {k: r for k, r in results.items() if r is not None}

    seeds = args.seeds
    all_parts = set(args.parts) == set(PARTS)
    out = [f"Made by `python experiments/rules/run.py{'' if all_parts else ' --parts ' + ' '.join(args.parts)}"
                              f"{'' if seeds == [0, 1, 2] else ' --seeds ' + ' '.join(map(str, seeds))}"
                              f"{' --frames ' + str(args.frames) if args.frames else ''}` (mean ± std over seeds {seeds})."]
    if "copy" in args.parts:
        out += ["", f"**Copy task**, level {COPY_LEVEL} (patterns of 1–{COPY_LEVEL} bits), {COPY_SEQUENCES:,} training "
                f"sequences, weights updated online at every step, about {copy_params:,} parameters each:", "",
                "| model, rule | hidden size | parameters | test sequence accuracy, % | seeds solved | wall, s |",
                "|---|---|---|---|---|---|"]
        for label, m, c, k in COPY_METHODS:
            rs = [results[("copy", (m, c, k, s))] for s in seeds if ("copy", (m, c, k, s)) in results]
            if not rs:
                continue
            out.append(f"| {label} | {rs[0]['hidden_size']} | {rs[0]['parameters']:,} | "
                       f"{mean_std([r['test_accuracy'] for r in rs], 100, 1, len(seeds))} | "
                       f"{sum(r['sequences_to_solve'] is not None for r in rs)}/{len(rs)} | "
                       f"{statistics.mean(r['wall_s'] for r in rs):.0f} |")
    if "memory" in args.parts:
        out += ["", f"**Memory tasks** (R2AC, M = {MEMORY_M}, {args.frames or MEMORY_FRAMES:,} frames; greedy return on "
                f"held-out seeds, optimum 1, memoryless 0), agents of about {mem_params:,} parameters:", "",
                "| core, rule | hidden size | parameters | " + " | ".join(MEMORY_TASKS) + " |",
                "|---|---|---|" + "---|" * len(MEMORY_TASKS)]
        for label, core in MEMORY_CORES:
            cells = [mean_std([results[("memory", (env, core, s))]["eval"]["greedy"]["mean"] for s in seeds
                               if ("memory", (env, core, s)) in results], seeds=len(seeds)) for env in MEMORY_TASKS]
            out.append(f"| {label} | {mem_hidden[core]} | {agent_parameters(MEMORY_TASKS[0], core, mem_hidden[core]):,} | "
                       + " | ".join(cells) + " |")
    if "ppo" in args.parts:
        out += ["", f"**PPO vs IMPALA** with the same exact-RTRL cores ({args.frames or PPO_FRAMES:,} frames, defaults "
                "of each algorithm; greedy return on held-out seeds; popgym returns lie in [−1, 1]):", "",
                "| core | algorithm | " + " | ".join(PPO_TASKS) + " |", "|---|---|" + "---|" * len(PPO_TASKS)]
        for label, core in PPO_CORES:
            for algo in ("impala", "ppo"):
                cells = [mean_std([results[("ppo", (env, core, algo, s))]["eval"]["greedy"]["mean"] for s in seeds
                                   if ("ppo", (env, core, algo, s)) in results], seeds=len(seeds)) for env in PPO_TASKS]
                out.append(f"| {label} | {algo} | " + " | ".join(cells) + " |")
    if "lag" in args.parts:
        out += ["", f"**A fixed lag of 4 steps**: {LAG_TASK} (R2AC, defaults, {args.frames or LAG_FRAMES:,} frames; "
                "training return over the last 100 episodes and greedy return on held-out seeds; random ≈ −0.5, "
                f"optimum 1), agents of about {lag_params:,} parameters:", "",
                "| core, rule | M | hidden size | parameters | training return | greedy return | wall, min |",
                "|---|---|---|---|---|---|---|"]
        for label, core, m in LAG_RUNS:
            rs = [results[("lag", (core, m, s))] for s in seeds if ("lag", (core, m, s)) in results]
            if not rs:
                continue
            out.append(f"| {label} | {m} | {lag_hidden[core]} | {agent_parameters(LAG_TASK, core, lag_hidden[core]):,} | "
                       f"{mean_std([r['train_mean_return_last100'] for r in rs], seeds=len(seeds))} | "
                       f"{mean_std([r['eval']['greedy']['mean'] for r in rs], seeds=len(seeds))} | "
                       f"{statistics.mean(r['wall_s'] for r in rs) / 60:.0f} |")
    args.docs.mkdir(exist_ok=True)
    (args.docs / "rules_table.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))
    plot(args, seeds)


def plot(args, seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (["copy"] if "copy" in args.parts else []) + (MEMORY_TASKS if "memory" in args.parts else []) \
        + (PPO_TASKS if "ppo" in args.parts else []) + ([LAG_TASK] if "lag" in args.parts else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "copy":
            lines = [(label, [args.out / "copy" / f"{m}-{c}-k{k}-s{s}" for s in seeds], "valid_accuracy")
                     for label, m, c, k in COPY_METHODS]
            ax.set_xlabel("training sequences")
        elif panel in MEMORY_TASKS:
            lines = [(label, list((args.out / "memory").glob(f"{panel}-{core}-*")), "mean_return")
                     for label, core in MEMORY_CORES]
            ax.set_xlabel("frames")
        elif panel == LAG_TASK:  # M = 10 only (the M = 3 runs are in the table)
            lines = [(label, [d for d in (args.out / "lag").glob(f"{panel}-{core}-*") if "unroll" not in d.name],
                      "mean_return") for label, core in LAG_CORES]
            ax.set_xlabel("frames")
        else:
            lines = [(f"{label}, {algo}", list((args.out / "ppo").glob(f"{panel}-{core}-algo-{algo}-s*")), "mean_return")
                     for label, core in PPO_CORES for algo in ("impala", "ppo")]
            ax.set_xlabel("frames")
        for i, (label, dirs, key) in enumerate(lines):
            for j, d in enumerate(sorted(dirs)):
                if (d / "metrics.csv").exists():
                    ax.plot(*curve(d, key), color=f"C{i}", alpha=0.7, label=label if j == 0 else None)
        ax.set_title(panel, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.docs / "rules.png", dpi=110)


if __name__ == "__main__":
    main()
