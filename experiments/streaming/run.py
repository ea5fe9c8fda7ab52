"""MemoryChain with stream AC(λ): streaming exact RTRL against streaming TBPTT(1) of the same cell and
the feed-forward agent (issue 22's first bar: the exact-RTRL RTU learns length 32 on >= 4/5 seeds where
TBPTT(1) and feed-forward learn it on <= 1/5).

    python experiments/streaming/run.py                       # length 32, 3 cores x 5 seeds, 100 k steps
    python experiments/streaming/run.py --lengths 2 8 32 128 --cores rtrl-rtu rtrl-lru rtrl-elstm tbptt-rtu
    python experiments/streaming/run.py --report-only         # the table from the runs finished so far
    python experiments/streaming/run.py --r-max 0.9 --out runs/experiments/streaming-r09   # an init that
                                                              # cannot hold the context 32 steps (0.9^32 = 0.03)
    python experiments/streaming/run.py --seeds 0 --steps 2000 --out runs/smoke   # a smoke run

Each run is an `rtrl train --algo stream-ac` process with its own run folder under --out: a finished
run (its result.json) is reused and an interrupted one resumed, so re-running continues the sweep.
A run succeeds when its greedy return on held-out episodes (--eval-episodes, 100) is 1.0: every
context recalled. Writes docs/streaming_table.md (successes per core and length, and the mean
greedy return) and docs/streaming.png (success rate against length), from whatever has finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional


def run_dir(out: Path, length: int, core: str, seed: int) -> Path:
    return out / f"MemoryChain{length}-{core}-s{seed}"


def run_one(out: Path, length: int, core: str, seed: int, steps: int, episodes: int, r_max: float = 1.0) -> None:
    folder = run_dir(out, length, core, seed)
    if (folder / "result.json").exists():
        return
    cmd = [sys.executable, "-m", "rtrl.cli", "train", "--algo", "stream-ac",
           "--env", f"rtrl-MemoryChain{length}-v0", "--core", core, "--seed", str(seed),
           "--total-frames", str(steps), "--eval-episodes", str(episodes), "--run-dir", str(folder),
           "--no-progress"]
    if r_max != 1.0:
        cmd += ["--r-max", str(r_max)]
    if folder.exists():
        cmd.append("--resume")
    print(" ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def finished(out: Path, length: int, core: str, seed: int) -> Optional[tuple[float, int]]:
    """The finished run's greedy evaluation return and its steps, or None (not finished, or not evaluated)."""
    f = run_dir(out, length, core, seed) / "result.json"
    if not f.exists():
        return None
    r = json.loads(f.read_text())
    return None if r.get("eval") is None else (float(r["eval"]["greedy"]["mean"]), int(r["frames"]))


def report(args) -> str:
    head = "| core | " + " | ".join(f"length {n}" for n in args.lengths) + " |"
    lines = [head, "|---|" + "---|" * len(args.lengths)]
    rates: dict[str, list[Optional[float]]] = {}
    steps: dict[int, set[int]] = {n: set() for n in args.lengths}
    for core in args.cores:
        cells, rates[core] = [], []
        for n in args.lengths:
            runs = [r for r in (finished(args.out, n, core, s) for s in args.seeds) if r is not None]
            if not runs:
                cells.append("not run")
                rates[core].append(None)
                continue
            g = [r for r, _ in runs]
            steps[n].update(k for _, k in runs)
            wins = sum(r >= 1.0 for r in g)
            rates[core].append(wins / len(g))
            cells.append(f"{wins}/{len(g)} (greedy {statistics.mean(g):.2f})")
        lines.append(f"| {core} | " + " | ".join(cells) + " |")
    lines.append("| steps per run | " + " | ".join(", ".join(f"{k:,}" for k in sorted(steps[n])) or "—"
                                                  for n in args.lengths) + " |")
    table = "\n".join(lines)
    cmd = "python experiments/streaming/run.py " + " ".join(sys.argv[1:])
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "streaming_table.md").write_text(
        f"Made by `{cmd.strip()}` (stream AC(λ), preset stream; a cell is the number of seeds of {args.seeds} "
        f"whose greedy return on {args.eval_episodes} held-out episodes is 1.0, and the mean greedy return; "
        "optimum 1, a memoryless policy 0; the last row: each length's steps per run):\n\n" + table + "\n")
    _plot(args, rates)
    return table


def _plot(args, rates: dict[str, list[Optional[float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for core, r in rates.items():
        pts = [(n, v) for n, v in zip(args.lengths, r) if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=core)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("MemoryChain length")
    ax.set_ylabel("success rate over seeds")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.docs / "streaming.png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[32])
    ap.add_argument("--cores", nargs="+", default=["rtrl-rtu", "tbptt-rtu", "none"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--eval-episodes", type=int, default=100)
    ap.add_argument("--r-max", type=float, default=1.0,
                    help="the LRU's and RTU's ring init up to this |λ| (give each value its own --out)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time (each uses one core)")
    ap.add_argument("--report-only", action="store_true", help="only write the table from finished runs")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/streaming"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    args = ap.parse_args()
    if not args.report_only:
        jobs = [(n, c, s) for n in args.lengths for s in args.seeds for c in args.cores]  # seeds interleaved
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda j: run_one(args.out, *j, args.steps, args.eval_episodes, args.r_max), jobs))
    print(report(args))


if __name__ == "__main__":
    main()
