"""The promise (the paper's Table 1, in our tasks): credit spans longer than the segment.

    python experiments/promise/run.py --part sweep        # learning rates: 3 values, one seed, one task
    python experiments/promise/run.py                     # the table: every task x agent x 5 seeds
    python experiments/promise/run.py --report-only       # tables and curves from the finished runs
    python experiments/promise/run.py --tasks rtrl-Recall20-v0 --seeds 0 --scale 0.01 --out runs/smoke   # smoke

Agents (R2AC, the `small` preset otherwise: 256 streams, an actor process, RMSProp): exact RTRL of
the eLSTM, the LRU and the RTU at a short M (5) and a long one (20); truncated BPTT of the same
cells at the same M; the dense LSTM and GRU (truncated BPTT) at M = 20 and at the paper's M = 100;
and feedforward. Every recurrent agent has about the parameter count of the eLSTM agent with
N = 64 on that task (the hidden size is chosen per task and core; feedforward has what it has).
Each agent's learning rate is the best of a sweep (``--part sweep``: 1e-3, 3e-3, 1e-2 on seed 0
of rtrl-Recall20-v0, final training return) and then fixed for every task.

Tasks: credit must cross segment boundaries: the cue of rtrl-Recall<d> is d + 1 steps before its
query (d = 20, 50 >> M); popgym RepeatFirstEasy (the first card, all episode long: 51 steps) and
AutoencodeEasy (a sequence shown, then recalled: 103 steps); MiniGrid-MemoryS7 (an object seen at
the start decides the door at the end, up to 245 steps).

Per agent and task: the greedy return on 100 held-out episodes at the end (mean ± 95 % CI over
seeds), seeds solved (greedy >= 90 % of the optimum), frames until the training return first
reached 90 % of the optimum (median over the seeds that did). The comparisons a claim rests on get
an exact permutation test of the mean greedy return and a one-sided Fisher test of seeds solved.
Finished runs are reused; a larger --scale extends them. Writes docs/promise_table.md, docs/promise.png.

Follow-up parts:

    python experiments/promise/run.py --part updates      # the long-M agents at equal updates (fewer streams)
    python experiments/promise/run.py --part long         # RepeatFirstEasy at 5 M frames, three agents
    python experiments/promise/run.py --part batch        # equal updates again, with 256 streams (4x frames)
    python experiments/promise/run.py --part ppo          # docs/results.md's PPO command on Recall20 and 50

* ``updates``: with 256 streams an update every M steps gives 781 updates in 1 M frames at M = 5
  but 195 at M = 20 and 39 at M = 100. Here the long-M agents run 256·5/M streams (64 at M = 20,
  13 at M = 100), so every agent gets ~781 updates of ~1,280 frames in 1 M frames, as at M = 5.
* ``long``: popgym RepeatFirstEasy at 5 M frames a run (2.5x the main table's budget) for the
  one pair that differed there at 2 M (the RTU, exact RTRL and TBPTT at M = 5) and the GRU at
  M = 20 (POPGym's strongest model).
* ``batch``: separates the two things ``updates`` changed at once. The M = 20 LRU and RTU (exact
  RTRL and TBPTT) on Recall20 with 256 streams and 4 M frames: ~782 updates, as in ``updates``,
  but of ~5,120 frames each (4x the streams), so against ``updates`` only the batch differs and
  against the main table only the number of updates. The LRU pair also runs at a lower rate
  (BATCH_LOW_LRS), about the main table's sum of steps spread over 4x the updates.
* ``ppo``: the recommended command of docs/results.md (PPO, exact-RTRL RTU) on Recall20 and
  Recall50, against the same command with TBPTT. Writes docs/promise_{updates,long,batch,ppo}_table.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import (budgets, compare, curve, fisher_p, fmt_ci, frames_to, hidden_for, old_preset,  # noqa: E402
                   permutation_p, run_train)

TASKS = {  # env: (frames, optimum of the return)
    "rtrl-Recall20-v0": (1_000_000, 1.0),
    "rtrl-Recall50-v0": (1_000_000, 1.0),
    "popgym-RepeatFirstEasy-v0": (2_000_000, 1.0),
    "popgym-AutoencodeEasy-v0": (2_000_000, 1.0),
    "MiniGrid-MemoryS7-v0": (500_000, 0.95),  # reward 1 - 0.9 t / 245; the shortest solutions take ~12 steps
}
AGENTS = [  # label, core, M
    *[(f"{cell}, exact RTRL, M={m}", f"rtrl-{cell.lower()}", m) for m in (5, 20) for cell in ("eLSTM", "LRU", "RTU")],
    *[(f"{cell}, TBPTT, M={m}", f"tbptt-{cell.lower()}", m) for m in (5, 20) for cell in ("eLSTM", "LRU", "RTU")],
    *[(f"{name}, TBPTT, M={m}", core, m) for m in (20, 100) for name, core in (("LSTM", "lstm"), ("GRU", "gru"))],
    ("feedforward, M=20", "none", 20),
]
# the long-M agents, but the eLSTM and the LSTM (0/5 at any M in the main table) and feedforward
UPDATES_AGENTS = [a for a in AGENTS if a[2] > 5 and a[1] not in ("none", "lstm") and "elstm" not in a[1]]
UPDATES_TASKS = ["rtrl-Recall20-v0", "rtrl-Recall50-v0"]
# the one pair that differed on RepeatFirstEasy at 2 M frames, and POPGym's strongest model
LONG_AGENTS = [a for a in AGENTS if (a[2] == 5 and "rtu" in a[1]) or (a[1] == "gru" and a[2] == 20)]
LONG_TASK, LONG_FRAMES = "popgym-RepeatFirstEasy-v0", 5_000_000
# the M = 20 element-wise cells whose exact-vs-TBPTT gap on Recall20 changed with ``updates``
BATCH_AGENTS = [a for a in AGENTS if a[2] == 20 and a[1] in ("rtrl-lru", "tbptt-lru", "rtrl-rtu", "tbptt-rtu")]
BATCH_TASK, BATCH_FRAMES = "rtrl-Recall20-v0", 4_000_000
# lower rates for the LRU pair's ~782 updates: 1e-3 over 782 sums 4x the steps of 1e-3 over the main table's 195
BATCH_LOW_LRS = {("rtrl-lru", 20): 3e-4, ("tbptt-lru", 20): 7.5e-4}
FOLLOW_UPS = {  # part: agents, tasks, frames a run per task, what column A is, the part column B is from,
    # and extra arms: (core, M) -> a learning rate to run besides the chosen one
    "updates": (UPDATES_AGENTS, UPDATES_TASKS, {e: TASKS[e][0] for e in UPDATES_TASKS},
                "256·5/M streams: equal updates", "main", {}),
    "long": (LONG_AGENTS, [LONG_TASK], {LONG_TASK: LONG_FRAMES}, "5 M frames, one decay of the lr", "main", {}),
    "batch": (BATCH_AGENTS, [BATCH_TASK], {BATCH_TASK: BATCH_FRAMES},
              "256 streams, 4 M frames: ~782 updates of ~5,120 frames", "updates", BATCH_LOW_LRS),
}
FOLLOW_UP_PAIRS = {  # the comparisons a claim rests on, within a follow-up part
    "updates": [(("rtrl-lru", 20), ("tbptt-lru", 20)), (("rtrl-rtu", 20), ("tbptt-rtu", 20)),
                (("rtrl-lru", 20), ("gru", 100)), (("rtrl-rtu", 20), ("gru", 100)), (("rtrl-lru", 20), ("gru", 20))],
    "long": [(("rtrl-rtu", 5), ("tbptt-rtu", 5)), (("rtrl-rtu", 5), ("gru", 20))],
    "batch": [(("rtrl-lru", 20), ("tbptt-lru", 20)), (("rtrl-rtu", 20), ("tbptt-rtu", 20)),
              tuple((core, m, lr) for (core, m), lr in BATCH_LOW_LRS.items())],
}  # an entry (core, M) has the chosen rate, (core, M, lr) an extra arm's
LRS = (1e-3, 3e-3, 1e-2)
SWEEP_TASK = "rtrl-Recall20-v0"
REFERENCE = ("rtrl-elstm", 64)  # the parameter count every recurrent agent matches


def run_dir(out: Path, part: str, env: str, core: str, m: int, lr: float, seed: int) -> Path:
    return out / part / f"{env}-{core}-M{m}-lr{lr:g}-s{seed}"


def streams(part: str, m: int) -> int:
    """256 streams; 256·5/M in the equal-updates part (every agent ~1,280 frames an update)."""
    return round(256 * 5 / m) if part == "updates" else 256


def job(out: Path, part: str, env: str, core: str, m: int, lr: float, seed: int, frames: int) -> dict | None:
    hidden = hidden_for(env, core, target(env))
    args = ["--env", env, "--core", core, "--unroll", str(m), "--lr", str(lr), "--seed", str(seed),
            "--hidden-size", str(hidden), "--log-every", "2", "--num-envs", str(streams(part, m))]
    return run_train(run_dir(out, part, env, core, m, lr, seed), [*old_preset(args), *args], frames)


_TARGETS: dict[str, int] = {}


def target(env: str) -> int:
    if env not in _TARGETS:
        from stats import agent_parameters

        _TARGETS[env] = agent_parameters(env, *REFERENCE)
    return _TARGETS[env]


def chosen_lrs(out: Path) -> dict[tuple[str, int], float]:
    """Each agent's learning rate: the sweep's best final training return (3e-3 where not swept)."""
    best = {}
    for _, core, m in AGENTS:
        scores = {}
        for lr in LRS:
            f = run_dir(out, "sweep", SWEEP_TASK, core, m, lr, 0) / "result.json"
            if f.exists():
                r = json.loads(f.read_text())["train_mean_return_last100"]
                scores[lr] = float("-inf") if r is None else r
        best[(core, m)] = max(scores, key=scores.get) if scores else 3e-3
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("sweep", "main", *FOLLOW_UPS, "ppo"), default="main")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every frame budget")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/promise"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    args = ap.parse_args()
    stats.LAUNCHER = args.launcher.split()
    if args.part == "sweep":
        frames = int(TASKS[SWEEP_TASK][0] * args.scale)
        for _, core, m in AGENTS:
            for lr in LRS:
                if not args.report_only:
                    job(args.out, "sweep", SWEEP_TASK, core, m, lr, 0, frames)
        write_sweep(args)
        return
    lrs = chosen_lrs(args.out)
    if args.part == "ppo":
        ppo_part(args)
        return
    if args.part in FOLLOW_UPS:
        follow_up(args, lrs)
        return
    if not args.report_only:
        for seed in args.seeds:  # seed-major: an interrupted sweep has every agent on the first seeds
            for env in args.tasks:
                for _, core, m in AGENTS:
                    job(args.out, "main", env, core, m, lrs[(core, m)], seed, int(TASKS[env][0] * args.scale))
    write_table(args, lrs)


def write_sweep(args) -> None:
    lines = [f"Learning-rate sweep: final training return (last 100 episodes) on {SWEEP_TASK}, seed 0, "
             f"{int(TASKS[SWEEP_TASK][0] * args.scale):,} frames; the best (bold) is used for every task.", "",
             "| agent | " + " | ".join(f"lr {lr:g}" for lr in LRS) + " |", "|---|" + "---|" * len(LRS)]
    best = chosen_lrs(args.out)
    for label, core, m in AGENTS:
        cells = []
        for lr in LRS:
            f = run_dir(args.out, "sweep", SWEEP_TASK, core, m, lr, 0) / "result.json"
            r = json.loads(f.read_text())["train_mean_return_last100"] if f.exists() else None
            text = "—" if r is None else f"{r:.2f}"
            cells.append(f"**{text}**" if best[(core, m)] == lr and r is not None else text)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "promise_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


PPO_TASKS = ["rtrl-Recall20-v0", "rtrl-Recall50-v0"]
PPO_AGENTS = [("RTU, exact RTRL", "rtrl-rtu"), ("RTU, TBPTT", "tbptt-rtu")]


def ppo_part(args) -> None:
    """docs/results.md's recommended command (PPO, the RTU, 256 units, the PPO preset: rollouts of
    20 steps) on Recall20 and Recall50 (the cue 21 and 51 steps back): exact RTRL against TBPTT of
    the same RTU."""
    greedy: dict[tuple[str, str], list[float]] = {}
    for env in PPO_TASKS:
        frames = int(TASKS[env][0] * args.scale)
        for seed in args.seeds:
            for label, core in PPO_AGENTS:
                d = args.out / "ppo" / f"{env}-{core}-s{seed}"
                if args.report_only:
                    r = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else None
                else:
                    r = run_train(d, ["--preset", "ppo", "--algo", "ppo", "--env", env, "--core", core, "--hidden-size", "256",
                                      "--seed", str(seed), "--log-every", "2"], frames)
                if r is not None:
                    greedy.setdefault((env, label), []).append(r["eval"]["greedy"]["mean"])
    (la, _), (lb, _) = PPO_AGENTS
    lines = ["Made by `python experiments/promise/run.py --part ppo`: `rtrl train --algo ppo --env TASK --core CORE "
             "--hidden-size 256` (the PPO preset: rollouts of 20 steps), 1 M frames; greedy return, mean ± 95 % CI "
             "(seeds solved); exact permutation test of the means, one-sided Fisher test of seeds solved.", "",
             f"| task | {la} | {lb} | permutation p | Fisher p (exact > TBPTT) |", "|---|---|---|---|---|"]
    for env in PPO_TASKS:
        a, b = greedy.get((env, la), []), greedy.get((env, lb), [])
        ka, kb = sum(x >= 0.9 for x in a), sum(x >= 0.9 for x in b)
        ok = len(a) >= 2 and len(b) >= 2
        lines.append(f"| {env} | {fmt_ci(a)} ({ka}/{len(a)}) | {fmt_ci(b)} ({kb}/{len(b)}) | "
                     f"{f'{permutation_p(a, b):.3f}' if ok else '—'} | "
                     f"{f'{fisher_p(ka, len(a), kb, len(b)):.3f}' if ok else '—'} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "promise_ppo_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def follow_up(args, lrs) -> None:
    """A follow-up part (FOLLOW_UPS): run (seed-major), then a table against its reference part."""
    agents, tasks, budget, what, ref, extra = FOLLOW_UPS[args.part]
    # every arm: (label, core, M, lr); the extra arms beside the agents at their chosen rate
    arms = [(label, core, m, lrs[(core, m)]) for label, core, m in agents]
    arms += [(label, core, m, extra[(core, m)]) for label, core, m in agents
             if (core, m) in extra]
    frames = {env: int(budget[env] * args.scale) for env in tasks}
    if not args.report_only:
        for seed in args.seeds:
            for env in tasks:
                for _, core, m, lr in arms:
                    job(args.out, args.part, env, core, m, lr, seed, frames[env])
    ref_runs = {e: [x for _, core, m in agents for x in results(args, lrs, e, core, m, ref)] for e in tasks}
    ref_budgets = ", ".join(dict.fromkeys(  # one entry per distinct budget
        f"{frames_label([r['frames'] for r, _ in rs])} frames"
        + (f": run at {f / 1e6:g} M, then extended, two decays of the lr" if (f := extended_from(rs)) else "")
        for rs in ref_runs.values() if rs))
    ref_what = "the main table (256 streams" if ref == "main" else f"the `{ref}` part ({FOLLOW_UPS[ref][3]}"
    lines = [f"Made by `python experiments/promise/run.py --part {args.part}`. Cells as in promise_table.md: "
             "greedy return, mean ± 95 % CI over seeds (seeds solved; median frames to 90 % of the optimum). "
             f"Column A: {what}; column B: the same agent in {ref_what}; {ref_budgets}; at its chosen rate).", "",
             "| task | agent | lr | streams | A | B | permutation p (A vs B) | Fisher p (A > B) |",
             "|---|---|---|---|---|---|---|---|"]
    greedy: dict[tuple, list[float]] = {}
    solved: dict[tuple, int] = {}
    for env in tasks:
        opt = TASKS[env][1]
        for label, core, m, lr in arms:
            cells, g, k = zip(*(summary(results(args, lrs, env, core, m, part, part_lr), opt)
                                for part, part_lr in ((args.part, lr), (ref, lrs[(core, m)]))))
            ok = len(g[0]) >= 2 and len(g[1]) >= 2
            p = f"{permutation_p(*g):.3f}" if ok else "—"
            fp = f"{fisher_p(k[0], len(g[0]), k[1], len(g[1])):.3f}" if ok else "—"
            lines.append(f"| {env} | {label} | {lr:g} | {streams(args.part, m)} | {cells[0]} | {cells[1]} "
                         f"| {p} | {fp} |")
            greedy[(env, core, m, lr)], solved[(env, core, m, lr)] = g[0], k[0]
    lines += ["", f"Within column A ({what}):", "",
              "| task | comparison | mean greedy A vs B | permutation p | seeds solved A vs B | Fisher p (A > B) |",
              "|---|---|---|---|---|---|"]
    for env in tasks:
        for a, b in FOLLOW_UP_PAIRS[args.part]:
            ka_, kb_ = [(env, *x) if len(x) == 3 else (env, *x, lrs[x]) for x in (a, b)]
            ga, gb = greedy.get(ka_, []), greedy.get(kb_, [])
            if len(ga) >= 2 and len(gb) >= 2:
                name = " vs ".join(f"{x[0]} M={x[1]}" + (f" lr {x[2]:g}" if len(x) == 3 else "") for x in (a, b))
                lines.append(f"| {env} | {name} | {compare(ga, gb, solved[ka_], solved[kb_])} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"promise_{args.part}_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def results(args, lrs, env: str, core: str, m: int, part: str = "main", lr: float | None = None
            ) -> list[tuple[dict, Path]]:
    """The finished runs (result, run dir) of one agent over ``args.seeds``; ``lr``: not the chosen rate."""
    out = []
    for s in args.seeds:
        d = run_dir(args.out, part, env, core, m, lrs[(core, m)] if lr is None else lr, s)
        if (d / "result.json").exists():
            out.append((json.loads((d / "result.json").read_text()), d))
    return out


def summary(runs: list[tuple[dict, Path]], optimum: float) -> tuple[str, list[float], int]:
    """One agent's table cell over its runs (greedy mean ± 95 % CI, seeds solved, median frames to 90 %
    of the optimum), its greedy returns and its seeds solved."""
    g = [r["eval"]["greedy"]["mean"] for r, _ in runs]
    k = sum(x >= 0.9 * optimum for x in g)
    reach = [f for f in (frames_to(d, 0.9 * optimum) for _, d in runs) if f is not None]
    when = f"; 90 % at {statistics.median(reach) / 1e6:.2f} M" if reach else ""
    return (f"{fmt_ci(g)} ({k}/{len(g)}{when})" if g else "—"), g, k


def frames_label(frames: list[int]) -> str:
    """'5 M', or '2–5 M' where the runs of one column stopped at different budgets."""
    lo, hi = min(frames) / 1e6, max(frames) / 1e6
    return f"{hi:.2g} M" if hi < 1.1 * lo else f"{lo:.2g}–{hi:.2g} M"


def extended_from(runs: list[tuple[dict, Path]]) -> int | None:
    """The first budget of these runs where any was extended to a larger one by a resume, else None."""
    firsts = [b[0] for _, d in runs if len(b := budgets(d)) > 1]
    return min(firsts) if firsts else None


def write_table(args, lrs) -> None:
    runs = {env: [x for _, core, m in AGENTS for x in results(args, lrs, env, core, m)] for env in args.tasks}
    frames = {env: [r["frames"] for r, _ in rs] for env, rs in runs.items()}
    heads = [f"{env} ({frames_label(frames[env])})" if frames[env] else env for env in args.tasks]
    lines = ["| agent | lr | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(args.tasks)]
    greedy: dict[tuple, list[float]] = {}
    solved: dict[tuple, int] = {}
    for label, core, m in AGENTS:
        cells = []
        for env in args.tasks:
            cell, g, k = summary(results(args, lrs, env, core, m), TASKS[env][1])
            greedy[(env, core, m)], solved[(env, core, m)] = g, k
            cells.append(cell)
        lines.append(f"| {label} | {lrs[(core, m)]:g} | " + " | ".join(cells) + " |")
    tests = ["", "| task | comparison | mean greedy A vs B | permutation p | seeds solved A vs B | Fisher p (A > B) |",
             "|---|---|---|---|---|---|"]
    pairs = [(f"rtrl-{c}", f"tbptt-{c}", 5) for c in ("elstm", "lru", "rtu")] + [("rtrl-lru", "gru", 5)]
    for env in args.tasks:
        for a, b, m in pairs:
            mb = 20 if b == "gru" else m
            ga, gb = greedy.get((env, a, m), []), greedy.get((env, b, mb), [])
            if len(ga) < 2 or len(gb) < 2:
                continue
            ka, kb = solved[(env, a, m)], solved[(env, b, mb)]
            tests.append(f"| {env} | {a} M={m} vs {b} M={mb} | {compare(ga, gb, ka, kb)} |")
    cmd = "python experiments/promise/run.py" + ("" if args.scale == 1 else f" --scale {args.scale}")
    head = (f"Made by `{cmd}` (then `--report-only`). Cells: greedy return on 100 held-out episodes at the end, "
            "mean ± 95 % CI over seeds (seeds solved: greedy >= 90 % of the optimum; median frames until the "
            "training return first reached 90 % of the optimum). Frames a run in each column's head.\n\n")
    first = {env: f for env, rs in runs.items() if (f := extended_from(rs))}
    for env, f in first.items():
        scale = max(frames[env]) / TASKS[env][0]
        head += (f"The {env} runs were made at {f / 1e6:g} M frames, then extended by `python experiments/promise/run.py "
                 f"--scale {scale:.2g} --tasks {env}` (a resumed run continues from its checkpoint; its linear "
                 f"learning-rate decay restarts at {1 - f / max(frames[env]):.1f} × lr, so these runs had two decay "
                 "cycles, not one).\n\n")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "promise_table.md").write_text(head + "\n".join(lines + tests) + "\n")
    print("\n".join(lines + tests))
    plot(args, lrs)


def plot(args, lrs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(args.tasks), figsize=(4.6 * len(args.tasks), 3.6), squeeze=False)
    for ax, env in zip(axes[0], args.tasks):
        for i, (label, core, m) in enumerate(AGENTS):
            curves = [curve(d) for _, d in results(args, lrs, env, core, m)]
            curves = [c for c in curves if c[0]]
            if not curves:
                continue
            grid = np.linspace(0, min(c[0][-1] for c in curves), 50)
            mean = np.mean([np.interp(grid, *c) for c in curves], 0)
            ax.plot(grid, mean, color=f"C{i % 10}", ls=("-", "--", ":")[i // 10 % 3], lw=1, label=label)
        ax.set_title(env, fontsize=9)
        ax.set_xlabel("frames")
        ax.set_ylabel("training return (mean over seeds)")
    axes[0][-1].legend(fontsize=5, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.docs / "promise.png", dpi=110)


if __name__ == "__main__":
    main()
