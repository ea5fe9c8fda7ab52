"""Two stacked LRU layers in R2AC on a memory task: the hybrid (top exact RTRL, bottom BPTT within
the segment) against one exact layer, truncated BPTT of both and full-episode BPTT of both.

    python experiments/layers/recall.py --reuse runs/experiments/promise/main   # the table
    python experiments/layers/recall.py --report-only        # tables and curves from finished runs
    python experiments/layers/recall.py --seeds 0 --frames 5120 --lrs 0.001 --cores rtrl2-lru --out runs/smoke

Task: rtrl-Recall20-v0 (the cue is 21 steps before its query; every episode lasts 22 steps), M = 5,
1 M frames, R2AC's defaults as the promise study (experiments/promise/run.py), 5 seeds. Every
agent has about the parameter count of the eLSTM agent with N = 64 (the promise study's sizes).
Full BPTT of both layers needs every rollout to be one whole episode, so ``bptt2-lru`` runs at
M = 22 (fewer, longer updates per frame). The 2-layer agents are run at learning rates 1e-3 and
3e-3 and the better (mean greedy return over seeds) is compared; the 1-layer rows are the
promise study's (its swept learning rate), read from ``--reuse`` when given, else run here, and
1-layer TBPTT also at 1e-3: the control for whether the task needs credit across segments.

Per agent: greedy return on 100 held-out episodes at the end (mean ± 95 % CI over seeds), seeds
solved (greedy >= 0.9), median frames until the training return first reached 0.9; an exact
permutation test of mean greedy return and a one-sided Fisher test of seeds solved for the
comparisons. Finished runs are reused. Writes docs/layers_rl_table.md and docs/layers_rl.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import (agent_parameters, compare, curve, fmt_ci, frames_to, hidden_for, old_preset,  # noqa: E402
                   permutation_p, run_train)

ENV, EPISODE = "rtrl-Recall20-v0", 22
AGENTS = [  # label, core, M, learning rates tried
    ("LRU, 1 layer, exact RTRL, M=5", "rtrl-lru", 5, (1e-3,)),
    ("LRU, 1 layer, TBPTT, M=5", "tbptt-lru", 5, (1e-3, 3e-3)),
    ("2 LRU layers, hybrid (top exact, bottom within segment), M=5", "rtrl2-lru", 5, (1e-3, 3e-3)),
    ("2 LRU layers, TBPTT of both, M=5", "tbptt2-lru", 5, (1e-3, 3e-3)),
    ("2 LRU layers, full BPTT of both, M=22 (one episode)", "bptt2-lru", EPISODE, (1e-3, 3e-3)),
]
REFERENCE = ("rtrl-elstm", 64)  # the parameter count every agent matches (as the promise study)


def run_dir(out: Path, core: str, m: int, lr: float, seed: int) -> Path:
    return out / f"{ENV}-{core}-M{m}-lr{lr:g}-s{seed}"


def find(args, core: str, m: int, lr: float, seed: int) -> Path:
    """The run's folder: the promise study's when ``--reuse`` holds it finished, else ours."""
    if args.reuse is not None:
        theirs = run_dir(args.reuse, core, m, lr, seed)
        if (theirs / "result.json").exists():
            return theirs
    return run_dir(args.out, core, m, lr, seed)


def job(args, core: str, m: int, lr: float, seed: int, hidden: int) -> Optional[dict]:
    d = find(args, core, m, lr, seed)
    if d.parent != args.out and (d / "result.json").exists():
        return json.loads((d / "result.json").read_text())
    run_args = ["--env", ENV, "--core", core, "--unroll", str(m), "--lr", str(lr), "--seed", str(seed),
                "--hidden-size", str(hidden), "--log-every", "2"]
    return run_train(d, [*old_preset(run_args), *run_args], args.frames)


def results(args, core: str, m: int, lr: float) -> list[tuple[dict, Path]]:
    out = []
    for s in args.seeds:
        d = find(args, core, m, lr, s)
        if (d / "result.json").exists():
            out.append((json.loads((d / "result.json").read_text()), d))
    return out


def greedy(rs: list[tuple[dict, Path]]) -> list[float]:
    return [r["eval"]["greedy"]["mean"] for r, _ in rs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--cores", nargs="+", default=None, choices=[a[1] for a in AGENTS], help="only these agents")
    ap.add_argument("--lrs", type=float, nargs="+", default=None, help="only these learning rates (default: each agent's)")
    ap.add_argument("--reuse", type=Path, default=None, help="a promise-study run folder (its `main` part) to read the 1-layer runs from")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/layers_rl"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    args = ap.parse_args()
    stats.LAUNCHER = args.launcher.split()
    agents = [(label, core, m, tuple(lr for lr in lrs if args.lrs is None or lr in args.lrs) or tuple(args.lrs))
              for label, core, m, lrs in AGENTS if args.cores is None or core in args.cores]
    target = agent_parameters(ENV, *REFERENCE)
    sizes = {core: hidden_for(ENV, core, target) for _, core, _, _ in agents}
    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted sweep has every agent on the first seeds
            for _, core, m, lrs in agents:
                for lr in lrs:
                    job(args, core, m, lr, seed, sizes[core])
    write_table(args, agents, sizes)


def write_table(args, agents, sizes) -> None:
    lines = ["| agent | hidden | params | lr | greedy return (mean ± 95 % CI) | per seed | seeds solved | "
             "training return, last 100 episodes | frames to 0.9 (median over those that did) |",
             "|---|---|---|---|---|---|---|---|---|"]
    best: dict[str, tuple[float, list[float]]] = {}
    train: dict[str, list[float]] = {}
    for label, core, m, lrs in agents:
        scored = [(lr, results(args, core, m, lr)) for lr in lrs]
        scored = [(lr, rs) for lr, rs in scored if rs]
        for lr, rs in scored:
            g = greedy(rs)
            reach = [f for f in (frames_to(d, 0.9) for _, d in rs) if f is not None]
            k = sum(x >= 0.9 for x in g)
            when = f"{statistics.median(reach) / 1e6:.2f} M ({len(reach)})" if reach else "—"
            params = rs[0][0].get("parameters") or agent_parameters(ENV, core, sizes[core])
            tr = [r["train_mean_return_last100"] for r, _ in rs if r["train_mean_return_last100"] is not None]
            lines.append(f"| {label} | {sizes[core]} | {params:,} | {lr:g} | {fmt_ci(g)} | "
                         f"{' '.join(f'{x:.2f}' for x in g)} | {k}/{len(g)} | {fmt_ci(tr)} | {when} |")
        if scored:
            lr, rs = max(scored, key=lambda s: statistics.mean(greedy(s[1])))
            best[core] = (lr, greedy(rs))
            train[core] = [r["train_mean_return_last100"] for r, _ in rs if r["train_mean_return_last100"] is not None]
    tests = ["", "Comparisons (each agent at its better learning rate):", "",
             "| A vs B | mean greedy A vs B | permutation p | seeds solved A vs B | Fisher p (A > B) | "
             "training return A vs B | permutation p |", "|---|---|---|---|---|---|---|"]
    for a, b in (("rtrl-lru", "rtrl2-lru"), ("rtrl2-lru", "rtrl-lru"), ("rtrl2-lru", "tbptt2-lru"),
                 ("bptt2-lru", "rtrl2-lru"), ("rtrl2-lru", "tbptt-lru")):
        if a not in best or b not in best or len(best[a][1]) < 2 or len(best[b][1]) < 2:
            continue
        ga, gb = best[a][1], best[b][1]
        ka, kb = sum(x >= 0.9 for x in ga), sum(x >= 0.9 for x in gb)
        tests.append(f"| {a} (lr {best[a][0]:g}) vs {b} (lr {best[b][0]:g}) | {compare(ga, gb, ka, kb)} | "
                     f"{statistics.mean(train[a]):.2f} vs {statistics.mean(train[b]):.2f} | "
                     f"{permutation_p(train[a], train[b]):.3f} |")
    flags = "" if args.frames == 1_000_000 else f" --frames {args.frames}"
    flags += "" if args.seeds == [0, 1, 2, 3, 4] else f" --seeds {' '.join(map(str, args.seeds))}"
    flags += f" --reuse {args.reuse}" if args.reuse else ""
    head = (f"Made by `python experiments/layers/recall.py{flags}` on {ENV}, {args.frames:,} frames. Greedy return on "
            "100 held-out episodes at the end; solved: greedy >= 0.9. Training return: the sampled policy's mean "
            "over the last 100 training episodes (mean ± 95 % CI over seeds).\n\n")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "layers_rl_table.md").write_text(head + "\n".join(lines + tests) + "\n")
    print("\n".join(lines + tests))
    plot(args, agents, best)


def plot(args, agents, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, core, m, _) in enumerate(agents):
        if core not in best:
            continue
        curves = [c for c in (curve(d) for _, d in results(args, core, m, best[core][0])) if c[0]]
        if not curves:
            continue
        grid = np.linspace(0, min(c[0][-1] for c in curves), 50)
        for c in curves:
            ax.plot(*c, color=f"C{i}", alpha=0.15, lw=0.7)
        ax.plot(grid, np.mean([np.interp(grid, *c) for c in curves], 0), color=f"C{i}", lw=1.5,
                label=f"{label}, lr {best[core][0]:g}")
    ax.set_xlabel("frames")
    ax.set_ylabel("training return (seeds thin, mean thick)")
    ax.set_title(f"{ENV}, seeds {args.seeds}", fontsize=9)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(args.docs / "layers_rl.png", dpi=110)


if __name__ == "__main__":
    main()
