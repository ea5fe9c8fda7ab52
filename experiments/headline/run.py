"""The headline agent of docs/results.md on popgym tasks that no other study used, against a
memoryless agent at the same budget.

    python experiments/headline/run.py                  # 2 tasks x 2 agents x 5 seeds, 2 M frames a run
    python experiments/headline/run.py --report-only    # docs/headline_table.md from the finished runs
    python experiments/headline/run.py --pairs "PPO (recommended)" --seeds 0 1 2 \
        --extra "--obs-norm --activation tanh --init orthogonal"   # both agents with flags added (own folders, own table)

The recommended agent is trained with exactly the command docs/results.md gives a user (printed
with each run): PPO with the exact-RTRL RTU (``--algo ppo --core rtrl-rtu --hidden-size 256``, the
PPO preset otherwise); the memoryless agent is the same command with ``--core none``. The tasks
were chosen before any run, as popgym tasks that no study here used (PositionOnlyCartPole,
RepeatFirst, RepeatPrevious, Autoencode and PositionOnlyPendulum were) and that need memory;
nothing was tuned on them. R2AC with the same core at M = 5 (the promise study's best agent on
Recall) and its memoryless twin run too, as a second pair: its first seed on
NoisyPositionOnlyCartPole was the first run made here (docs/results.md says why PPO is the
recommendation for popgym's control tasks and what that first run showed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import fmt_ci, old_preset, permutation_p, run_train  # noqa: E402

TASKS = ["popgym-NoisyPositionOnlyCartPoleEasy-v0", "popgym-CountRecallEasy-v0"]
FRAMES = 2_000_000
RECOMMENDED = ["--algo", "ppo", "--core", "rtrl-rtu", "--hidden-size", "256"]  # docs/results.md's command
PAIRS = {  # label: (agent with memory, the memoryless agent of the same command)
    "PPO (recommended)": (RECOMMENDED, ["--algo", "ppo", "--core", "none"]),
    "R2AC, M=5": (["--core", "rtrl-rtu", "--unroll", "5", "--hidden-size", "256"], ["--core", "none", "--unroll", "5"]),
}


def folder(extra: list[str]) -> str:
    algo = extra[extra.index("--algo") + 1] if "--algo" in extra else "impala"
    return ("ppo-" if algo == "ppo" else "") + extra[extra.index("--core") + 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=TASKS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--frames", type=int, default=FRAMES)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/headline"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS), help="which pairs to run")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    ap.add_argument("--extra", default="", help="flags added to both agents' commands (runs in their own folders; "
                                                "the table goes to headline_extra_table.md)")
    args = ap.parse_args()
    extra_flags = args.extra.split()
    suffix = "-" + "_".join(args.extra.replace("--", "").split()) if extra_flags else ""
    stats.LAUNCHER = args.launcher.split()
    greedy: dict[tuple[str, str, int], list[float]] = {}
    for label, pair in PAIRS.items():  # the recommended pair first: every task and seed
        for env in args.tasks if label in args.pairs else ():
            for seed in args.seeds:
                for i, extra in enumerate(pair):
                    d = args.out / f"{env}-{folder(extra)}{suffix}-s{seed}"
                    if args.report_only:
                        r = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else None
                    else:
                        r = run_train(d, [*old_preset(extra), "--env", env, *extra, *extra_flags, "--seed", str(seed)],
                                      args.frames)
                    if r is not None:
                        greedy.setdefault((env, label, i), []).append(r["eval"]["greedy"]["mean"])
    made = "python experiments/headline/run.py" + (f" --extra \"{args.extra}\"" if extra_flags else "")
    lines = [f"Made by `{made}`: {args.frames:,} frames a run, seeds "
             f"{', '.join(map(str, args.seeds))}; greedy return on 100 held-out episodes, mean ± 95 % CI over seeds; "
             "the exact two-sided permutation test of the means. Commands: "
             + "; ".join(f"{label}: `rtrl train --env TASK {' '.join(pair[0] + extra_flags)}` vs "
                         f"`... {' '.join(pair[1] + extra_flags)}`" for label, pair in PAIRS.items()
                         if label in args.pairs), "",
             "| task | algorithm | RTU, exact RTRL | feedforward (memoryless) | permutation p |", "|---|---|---|---|---|"]
    for env in args.tasks:
        for label in args.pairs:
            a, b = greedy.get((env, label, 0), []), greedy.get((env, label, 1), [])
            p = f"{permutation_p(a, b):.3f}" if len(a) >= 2 and len(b) >= 2 else "—"
            lines.append(f"| {env} | {label} | {fmt_ci(a)} | {fmt_ci(b)} | {p} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / ("headline_extra_table.md" if extra_flags else "headline_table.md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
