"""Reference numbers: rtrl's plain commands beside the field's published scores, scored as they were.

    python experiments/reference/run.py                       # every row, 3 seeds (hours on 2 cores)
    python experiments/reference/run.py --rows ppo-cartpole   # some rows
    python experiments/reference/run.py --report-only         # docs/reference_table.md from the finished runs

Each row runs the command a user types (``rtrl train`` and the options shown, nothing else: the preset
chosen from the env does the rest) and scores it as cleanrl scores its benchmark: the mean return of
the last 100 training episodes of each seed (``train_mean_return_last100``), then mean ± std over the
seeds (population std, as openrlbenchmark). Runs are resumable (an unfinished run continues, a
finished one is reused). The published numbers and their settings: ``../shared/notes/peers.md`` and
docs/reference.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import stats  # noqa: E402
from stats import run_train  # noqa: E402


@dataclass(frozen=True)
class Row:
    key: str
    task: str
    agent: str
    args: tuple[str, ...]  # after `rtrl train`
    frames: int
    reference: str  # the published number (same metric and budget unless it says otherwise)
    source: str


GRU_HIDDEN = 48  # the GRU's recurrent parameters (16.6 k) ≈ the RTU's of 256 (17.2 k), as in the RTU paper


def _masked(mask: str) -> list[Row]:
    task = f"{mask}/Hopper-v5"
    paper = "RTU ≥ GRU/LSTM (curves only)"
    src = "RTU paper (Elelimy et al. 2024), masked MuJoCo at 5 M"
    return [Row(f"{mask.lower()}-hopper-rtu", task, "PPO, RTU exact RTRL", ("--env", task, "--core", "rtrl-rtu"),
                2_000_000, paper, src),
            Row(f"{mask.lower()}-hopper-gru", task, f"PPO, GRU {GRU_HIDDEN} TBPTT (equal parameters)",
                ("--env", task, "--core", "gru", "--hidden-size", str(GRU_HIDDEN)), 2_000_000, paper, src),
            Row(f"{mask.lower()}-hopper-none", task, "PPO, feedforward", ("--env", task, "--core", "none"),
                2_000_000, paper, src),
            # a control, not a plain command: the feedforward agent with the recurrent preset's update (10 epochs
            # of 8 minibatches, one trunk) instead of its own 10 x 32 with a separate critic
            Row(f"{mask.lower()}-hopper-none-10x8", task, "PPO, feedforward, the recurrent agents' update",
                ("--env", task, "--core", "none", "--ppo-minibatches", "8", "--critic", "shared"),
                2_000_000, "(a control)", "")]


ROWS = [
    Row("ppo-cartpole", "CartPole-v1", "PPO, feedforward", ("--env", "CartPole-v1", "--core", "none"), 500_000,
        "490.0 ± 6.1", "cleanrl ppo.py"),
    Row("ppo-acrobot", "Acrobot-v1", "PPO, feedforward", ("--env", "Acrobot-v1", "--core", "none"), 500_000,
        "−86.4 ± 1.3", "cleanrl ppo.py"),
    Row("ppo-hopper", "Hopper-v5", "PPO, feedforward", ("--env", "Hopper-v5", "--core", "none"), 1_000_000,
        "2382.9 ± 271.7 (Hopper-v4)", "cleanrl ppo_continuous_action.py"),
    Row("ppo-halfcheetah", "HalfCheetah-v5", "PPO, feedforward", ("--env", "HalfCheetah-v5", "--core", "none"),
        1_000_000, "1442.6 ± 46.0 (HalfCheetah-v4)", "cleanrl ppo_continuous_action.py"),
    Row("r2ac-cartpole", "CartPole-v1", "R2AC, feedforward", ("--algo", "impala", "--env", "CartPole-v1", "--core",
                                                                "none"), 500_000, "—", "any working actor-critic solves it"),
    Row("r2ac-acrobot", "Acrobot-v1", "R2AC, feedforward", ("--algo", "impala", "--env", "Acrobot-v1", "--core",
                                                              "none"), 500_000, "—", ""),
    Row("rec-cartpole", "PositionOnly/CartPole-v1", "PPO, RTU exact RTRL (the plain command)",
        ("--env", "PositionOnly/CartPole-v1"), 200_000, "500 ± 0 (CartPoleNoVel-v1, 100 k)",
        "sb3-contrib RecurrentPPO, rl-baselines3-zoo"),
    Row("rec-pendulum", "PositionOnly/Pendulum-v1", "PPO, RTU exact RTRL (the plain command)",
        ("--env", "PositionOnly/Pendulum-v1"), 100_000, "−217.9 ± 140.1 (PendulumNoVel-v1)",
        "sb3-contrib RecurrentPPO, rl-baselines3-zoo"),
    *_masked("PositionOnly"),
    *_masked("VelocityOnly"),
]


def cell(xs: list[float]) -> str:
    if not xs:
        return "—"
    return f"{statistics.mean(xs):.1f} ± {statistics.pstdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", default=[r.key for r in ROWS], choices=[r.key for r in ROWS])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every row's frames (a smoke test: 0.001)")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/reference"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--launcher", default="", help="a prefix for every run's command, e.g. 'nice -n 10'")
    args = ap.parse_args()
    stats.LAUNCHER = args.launcher.split()
    lines = [f"Made by `python experiments/reference/run.py` (seeds {', '.join(map(str, args.seeds))}): the mean "
             "return of the last 100 training episodes of each seed, mean ± std over seeds (cleanrl's metric); "
             "wall: the mean training time of a run on our 2-core CPU (seconds).", "",
             "| task | agent | command | frames | rtrl | per seed | wall (s) | published | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in ROWS if r.key in args.rows):
        frames = max(int(row.frames * args.scale), 1)
        scores, walls = [], []
        for seed in args.seeds:
            d = args.out / f"{row.key}-s{seed}"
            if args.report_only:
                r = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else None
            else:
                r = run_train(d, [*row.args, "--seed", str(seed), "--eval-episodes", "0"], frames)
            if r is not None and r.get("train_mean_return_last100") is not None:
                scores.append(r["train_mean_return_last100"])
                walls.append(r["wall_s"])
        command = "`rtrl train " + " ".join(row.args) + f" --total-frames {frames}`"
        per_seed = ", ".join(f"{x:.0f}" for x in scores) or "—"
        wall = f"{statistics.mean(walls):.0f}" if walls else "—"
        lines.append(f"| {row.task} | {row.agent} | {command} | {frames:,} | {cell(scores)} | {per_seed} | {wall} | "
                     f"{row.reference} | {row.source} |")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "reference_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
