"""The limits (issue 13, part 4b and 4c): the eLSTM's fixed lag, and fully online R2AC.

    python experiments/limits/run.py                         # both parts: lr sweep on seed 0, then 5 seeds
    python experiments/limits/run.py --parts online          # one part
    python experiments/limits/run.py --report-only           # docs/limits_table.md and docs/limits.png
    python experiments/limits/run.py --seeds 0 --scale 0.01 --out runs/smoke --docs /tmp/docs   # smoke

* ``lag``: popgym RepeatPreviousEasy (name the card of 4 steps ago) at M = 10, where the whole lag
  fits in one segment, so the learning rule does not matter and the cell does. The eLSTM did not
  learn it (docs/rules.md), the LRU and RTU did. The hypothesis to accept or reject: "a real
  element-wise recurrence cannot rotate information through its state". Controls: the eLSTM with
  forget-gate biases 0, 1 and 3 (slower decay), a real diagonal linear recurrence with an output
  gate (``rtrl-diag``: no gates in the recurrence, real eigenvalues), and the complex LRU.
* ``online``: R2AC with exact-RTRL LRU and RTU on rtrl-Recall20 at M = 1 (an update every step:
  fully online), 2 and 3, against the same agents at M = 5 (the promise study's runs, reused); the
  paper never ran M = 1, saying M > 1 is "crucial for TD learning of the critic". The critic part
  reruns M = 1 with the value loss weighted 4x more and 2x less than the default.

Every agent has the parameter count of the eLSTM agent with N = 64 on its task, its learning rate
the best final training return of a sweep on seed 0 (the values in LRS; ties to the smaller),
then 5 seeds. Cells: greedy return on 100 held-out episodes, mean ± 95 % CI over seeds, seeds
solved (greedy >= 0.9), and median frames until the training return first reached 0.9.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import agent_parameters, compare, curve, fmt_ci, frames_to, hidden_for, old_preset, run_train  # noqa: E402

REFERENCE = ("rtrl-elstm", 64)  # every agent's parameter count (as in the promise study)
PROMISE = Path("runs/experiments/promise")  # the promise study's runs (M = 5 references, reused)


def agent(label: str, core: str, m: int, lrs: tuple, extra: tuple = ()) -> dict:
    return dict(label=label, core=core, m=m, lrs=lrs, extra=list(extra))


PARTS = {
    "lag": dict(env="popgym-RepeatPreviousEasy-v0", frames=1_000_000, agents=[
        *[agent(f"eLSTM, exact RTRL, forget bias {b}", "rtrl-elstm", 10, (1e-3, 3e-3, 1e-2), ("--forget-bias", str(b)))
          for b in (0, 1, 3)],
        agent("real diagonal (diag), exact RTRL", "rtrl-diag", 10, (1e-3, 3e-3, 1e-2)),
        agent("real diagonal (diag), TBPTT", "tbptt-diag", 10, (1e-3, 3e-3, 1e-2)),
        agent("LRU (complex diagonal), exact RTRL", "rtrl-lru", 10, (1e-3, 3e-3, 1e-2)),
    ]),
    "online": dict(env="rtrl-Recall20-v0", frames=1_000_000, agents=[
        *[agent(f"{cell}, exact RTRL, M={m}", f"rtrl-{cell.lower()}", m, (3e-4, 1e-3, 3e-3))
          for cell in ("LRU", "RTU") for m in (1, 2, 3)],
        *[agent(f"{cell}, exact RTRL, M=1, value weight {w}", f"rtrl-{cell.lower()}", 1, (), ("--value-weight", w))
          for cell in ("LRU", "RTU") for w in ("2", "0.25")],
    ]),
}
PROMISE_M5 = {"online": [("LRU, exact RTRL, M=5 (promise study)", "rtrl-lru", 5, 1e-3),
                         ("RTU, exact RTRL, M=5 (promise study)", "rtrl-rtu", 5, 3e-3)]}


def key(a: dict) -> str:
    return "".join(a["extra"]).replace("--", "-")


def run_dir(out: Path, part: str, stage: str, env: str, a: dict, lr: float, seed: int) -> Path:
    return out / part / stage / f"{env}-{a['core']}-M{a['m']}{key(a)}-lr{lr:g}-s{seed}"


def job(out: Path, part: str, stage: str, a: dict, lr: float, seed: int, frames: int) -> dict | None:
    env = PARTS[part]["env"]
    hidden = hidden_for(env, a["core"], agent_parameters(env, *REFERENCE))
    args = ["--env", env, "--core", a["core"], "--unroll", str(a["m"]), "--lr", str(lr), "--seed", str(seed),
            "--hidden-size", str(hidden), "--log-every", "2", *a["extra"]]
    return run_train(run_dir(out, part, stage, env, a, lr, seed), [*old_preset(args), *args], frames)


DIVERGED = float("-inf")  # a run the divergence guard stopped leaves its folder but no result.json
NO_EPISODES = -1e9  # finished, but no episode ended (tiny budgets): below any return, above a divergence


def sweep_scores(out: Path, part: str, a: dict) -> dict[float, float]:
    scores = {}
    for lr in a["lrs"]:
        f = run_dir(out, part, "sweep", PARTS[part]["env"], a, lr, 0) / "result.json"
        if f.exists():
            r = json.loads(f.read_text())["train_mean_return_last100"]
            scores[lr] = NO_EPISODES if r is None else r
        elif f.parent.exists():
            scores[lr] = DIVERGED
    return scores


def chosen_lr(out: Path, part: str, a: dict) -> float | None:
    """The sweep's best rate; an agent without a sweep of its own (a critic variant) takes the rate
    chosen for its core and M."""
    if not a["lrs"]:
        base = next(b for b in PARTS[part]["agents"] if b["core"] == a["core"] and b["m"] == a["m"] and b["lrs"])
        return chosen_lr(out, part, base)
    scores = sweep_scores(out, part, a)
    return max(sorted(scores), key=scores.get) if scores else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    ap.add_argument("--agents", default="", help="only the agents whose label contains this text")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every frame budget")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/limits"))
    ap.add_argument("--promise", type=Path, default=PROMISE, help="the promise study's runs (M = 5 references)")
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    args = ap.parse_args()
    stats.LAUNCHER = args.launcher.split()
    for part in PARTS.values():
        part["agents"] = [a for a in part["agents"] if args.agents in a["label"]]
    for part in args.parts:
        if args.report_only:
            break
        frames = int(PARTS[part]["frames"] * args.scale)
        for a in PARTS[part]["agents"]:
            for lr in a["lrs"]:
                job(args.out, part, "sweep", a, lr, 0, frames)
        for seed in args.seeds:
            for a in PARTS[part]["agents"]:
                lr = chosen_lr(args.out, part, a)
                if lr is not None:
                    job(args.out, part, "main", a, lr, seed, frames)
    report(args)


def seed_results(dirs: list[Path]) -> tuple[list[float], list[Path], int]:
    """Greedy returns of the finished seeds, their folders, and how many seeds diverged (the guard
    stopped them: a folder without result.json). A diverged seed counts as not solved."""
    done = [d for d in dirs if (d / "result.json").exists()]
    diverged = sum(d.exists() and not (d / "result.json").exists() for d in dirs)
    return [json.loads((d / "result.json").read_text())["eval"]["greedy"]["mean"] for d in done], done, diverged


def report(args) -> None:
    lines = ["Made by `python experiments/limits/run.py` (then `--report-only`). Greedy return on 100 held-out "
             "episodes, mean ± 95 % CI over seeds (seeds solved: greedy >= 0.9; median frames until the training "
             "return first reached 0.9; diverged: seeds the divergence guard stopped, counted as not solved and "
             "absent from the mean). Sweep: final training return on seed 0 per learning rate.", ""]
    rows: dict[str, tuple[list[float], int]] = {}
    for part in args.parts:
        env = PARTS[part]["env"]
        lines += [f"### {part}: {env}, {int(PARTS[part]['frames'] * args.scale):,} frames a run", "",
                  "| agent | hidden | sweep (lr: training return) | lr | greedy return | seeds solved | diverged | 90 % at |",
                  "|---|---|---|---|---|---|---|---|"]
        target = agent_parameters(env, *REFERENCE)
        specs = [(a["label"], a, chosen_lr(args.out, part, a),
                  lambda a, lr, s, part=part: run_dir(args.out, part, "main", PARTS[part]["env"], a, lr, s))
                 for a in PARTS[part]["agents"]]
        specs += [(label, dict(core=core, m=m, extra=[], lrs=()), lr,
                   lambda a, lr, s: args.promise / "main" / f"{env}-{a['core']}-M{a['m']}-lr{lr:g}-s{s}")
                  for label, core, m, lr in PROMISE_M5.get(part, [])]
        for label, a, lr, where in specs:
            sweep = sweep_scores(args.out, part, a) if a["lrs"] else {}
            text = ", ".join(f"{k:g}: " + ("diverged" if v == DIVERGED else "—" if v == NO_EPISODES else f"{v:.2f}")
                             for k, v in sweep.items())
            g, done, bad = seed_results([where(a, lr, s) for s in args.seeds]) if lr is not None else ([], [], 0)
            k = sum(x >= 0.9 for x in g)
            reach = [f for f in (frames_to(d, 0.9) for d in done) if f is not None]
            when = f"{statistics.median(reach) / 1e6:.2f} M" if reach else "—"
            rows[f"{part}:{label}"] = (g, k, len(g) + bad)
            lines.append(f"| {label} | {hidden_for(env, a['core'], target)} | {text or '(as its core and M)'} | "
                         f"{'—' if lr is None else f'{lr:g}'} | {fmt_ci(g)} | {k}/{len(g) + bad} | {bad} | {when} |")
        lines.append("")
    lines += ["| comparison | mean greedy A vs B | permutation p | seeds solved A vs B | Fisher p (A > B) |",
              "|---|---|---|---|---|"]
    for a_label, b_label in COMPARISONS:
        (ga, ka, na), (gb, kb, nb) = rows.get(a_label, ([], 0, 0)), rows.get(b_label, ([], 0, 0))
        if len(ga) >= 2 and len(gb) >= 2:
            lines.append(f"| {a_label.split(':')[1]} vs {b_label.split(':')[1]} | {compare(ga, gb, ka, kb, na, nb)} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "limits_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(args)


COMPARISONS = [
    ("lag:LRU (complex diagonal), exact RTRL", "lag:real diagonal (diag), exact RTRL"),
    ("lag:LRU (complex diagonal), exact RTRL", "lag:eLSTM, exact RTRL, forget bias 0"),
    ("lag:eLSTM, exact RTRL, forget bias 3", "lag:eLSTM, exact RTRL, forget bias 0"),
    ("online:LRU, exact RTRL, M=5 (promise study)", "online:LRU, exact RTRL, M=1"),
    ("online:RTU, exact RTRL, M=5 (promise study)", "online:RTU, exact RTRL, M=1"),
    ("online:LRU, exact RTRL, M=1, value weight 0.25", "online:LRU, exact RTRL, M=1, value weight 2"),
    ("online:RTU, exact RTRL, M=1, value weight 0.25", "online:RTU, exact RTRL, M=1, value weight 2"),
    ("online:LRU, exact RTRL, M=1, value weight 0.25", "online:LRU, exact RTRL, M=1"),
    ("online:RTU, exact RTRL, M=1, value weight 0.25", "online:RTU, exact RTRL, M=1"),
]


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(args.parts), figsize=(5.5 * len(args.parts), 3.8), squeeze=False)
    for ax, part in zip(axes[0], args.parts):
        for i, a in enumerate(PARTS[part]["agents"]):
            lr = chosen_lr(args.out, part, a)
            dirs = [run_dir(args.out, part, "main", PARTS[part]["env"], a, lr, s) for s in args.seeds]
            curves = [c for c in (curve(d) for d in dirs if (d / "result.json").exists()) if c[0]]  # not diverged
            if lr is None or not curves:
                continue
            grid = np.linspace(0, min(c[0][-1] for c in curves), 50)
            ax.plot(grid, np.mean([np.interp(grid, *c) for c in curves], 0), color=f"C{i % 10}", lw=1,
                    label=a["label"])
        ax.set_title(f"{part}: {PARTS[part]['env']}", fontsize=9)
        ax.set_xlabel("frames")
        ax.set_ylabel("training return (mean over seeds)")
        if ax.lines:
            ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.docs / "limits.png", dpi=110)


if __name__ == "__main__":
    main()
