"""The headline agent of docs/results.md on popgym tasks that no other study used, against a
memoryless agent at the same budget.

    python experiments/headline/run.py                  # 2 tasks x 2 agents x 5 seeds, 2 M frames a run
    python experiments/headline/run.py --report-only    # docs/headline_table.md from the finished runs

Both agents are trained with exactly the command docs/results.md gives a user (printed below with
each run), only ``--core`` differs: the recommended exact-RTRL RTU at M = 5 and the feedforward
agent (``--core none``). Nothing was tuned on these tasks: they were chosen before any run, as the
popgym tasks that no study here used (PositionOnlyCartPole, RepeatFirst, RepeatPrevious,
Autoencode and PositionOnlyPendulum were) and that need memory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import fmt_ci, permutation_p, run_train  # noqa: E402

TASKS = ["popgym-NoisyPositionOnlyCartPoleEasy-v0", "popgym-CountRecallEasy-v0"]
FRAMES = 2_000_000
RECOMMENDED = ["--core", "rtrl-rtu", "--unroll", "5", "--hidden-size", "256"]  # docs/results.md's command
AGENTS = {"RTU, exact RTRL, M=5 (recommended)": RECOMMENDED,
          "feedforward (memoryless)": ["--core", "none", "--unroll", "5"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/headline"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    args = ap.parse_args()
    stats.LAUNCHER = args.launcher.split()
    greedy: dict[tuple[str, str], list[float]] = {}
    for env in args.tasks:
        for seed in args.seeds:
            for label, extra in AGENTS.items():
                d = args.out / f"{env}-{extra[1]}-s{seed}"
                if args.report_only:
                    r = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else None
                else:
                    r = run_train(d, ["--env", env, *extra, "--seed", str(seed)], args.frames)
                if r is not None:
                    greedy.setdefault((env, label), []).append(r["eval"]["greedy"]["mean"])
    (rec, ff) = AGENTS
    lines = [f"Made by `python experiments/headline/run.py`: {args.frames:,} frames a run, seeds "
             f"{', '.join(map(str, args.seeds))}; greedy return on 100 held-out episodes, mean ± 95 % CI over seeds; "
             "the exact two-sided permutation test of the means.", "",
             f"| task | {rec} | {ff} | permutation p |", "|---|---|---|---|"]
    for env in args.tasks:
        a, b = greedy.get((env, rec), []), greedy.get((env, ff), [])
        p = f"{permutation_p(a, b):.3f}" if len(a) >= 2 and len(b) >= 2 else "—"
        lines.append(f"| {env} | {fmt_ci(a)} | {fmt_ci(b)} | {p} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "headline_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
