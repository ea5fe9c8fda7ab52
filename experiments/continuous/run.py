"""A continuous-control memory task: exact RTRL (LRU, RTU) vs LSTM with truncated BPTT vs feedforward.

    python experiments/continuous/run.py                          # 4 agents x 3 seeds, 1 M frames each
    python experiments/continuous/run.py --seeds 0 --frames 30000 --out runs/smoke --docs /tmp/docs   # smoke run
    python experiments/continuous/run.py --prefix 'nice -n 10'      # each run behind a command (e.g. a CPU lock)
    python experiments/continuous/run.py --env PositionOnly/Hopper-v5 --cores rtrl-rtu lstm none   # MuJoCo, positions only
    python experiments/continuous/run.py --plain --env PositionOnly/Pendulum-v1 --frames 100000   # the plain commands

popgym's PositionOnlyPendulumEasy: the pendulum swing-up with the angle's (cos, sin) only, no
angular velocity, so a policy must infer the velocity from the past; Box(1) torque actions, a
Gaussian policy. PPO (the RTU paper's algorithm) with 64 envs, rollouts of 32 steps, 4 epochs of
4 minibatches, Adam 1e-3 decaying to 0, no entropy bonus; every agent gets the same stem (MLP 64),
heads, and 64 hidden features. Each run is one `rtrl train` process with its own run folder
under --out; finished runs are reused and an interrupted one is resumed, so re-running continues
the sweep. Writes docs/continuous_table.md and docs/continuous.png (for another --env:
docs/continuous-<env>_table.md and .png). MuJoCo tasks (--env PositionOnly/<id> or VelocityOnly/<id>)
run with Adam 3e-4 and unclipped rewards (--reward-clip 0), the usual PPO settings there. The score: the greedy
evaluation return on 100 held-out episodes at the end of training (popgym's normalised scale:
1 = upright all episode), and the best training return (mean of the last 100 episodes, popgym's
"max over training" metric). With --plain each run is the plain command, `rtrl train --env ENV --core
CORE --total-frames F` and nothing else: the preset chosen from the env (for Gymnasium's
`PositionOnly/Pendulum-v1`, `ppo-pendulum`: the zoo's recipe, observation normalisation and reward
scaling, 256 features for every core) sets the rest, and the table adds cleanrl's metric (the mean
return of the last 100 training episodes at the end).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ENV = "popgym-PositionOnlyPendulumEasy-v0"
AGENTS = [  # label, core
    ("exact RTRL, LRU", "rtrl-lru"),
    ("exact RTRL, RTU", "rtrl-rtu"),
    ("LSTM, truncated BPTT (M=32)", "lstm"),
    ("GRU, truncated BPTT (M=32)", "gru"),
    ("feedforward", "none"),
]
PPO = ["--preset", "ppo", "--algo", "ppo", "--num-envs", "64", "--unroll", "32", "--ppo-minibatches", "4", "--ppo-epochs", "4",
       "--optimizer", "adam", "--lr", "1e-3", "--lr-decay", "--grad-clip", "0.5", "--clip-coef", "0.2", "--clip-value",
       "--gae-lambda", "0.95", "--discount", "0.99", "--value-weight", "0.5", "--entropy-weight", "0",
       "--reward-clip", "1", "--hidden-size", "64", "--encoder-width", "64", "--stem", "mlp"]  # every setting pinned


MUJOCO = ["--lr", "3e-4", "--reward-clip", "0"]  # after PPO: the later flag wins


def slug(env: str) -> str:
    return env.replace("/", "-").replace(":", "-")


def run_dir(out: Path, env: str, core: str, seed: int, plain: bool = False) -> Path:
    return out / f"{slug(env)}-{'plain' if plain else 'ppo'}-{core}-s{seed}"


def run_one(out: Path, env: str, core: str, seed: int, frames: int, prefix: list[str], plain: bool = False) -> dict:
    d = run_dir(out, env, core, seed, plain)
    if not (d / "result.json").exists():
        extra = MUJOCO if env.startswith(("PositionOnly/", "VelocityOnly/")) else []
        settings = [] if plain else [*PPO, *extra]
        cmd = [*prefix, sys.executable, "-m", "rtrl.cli", "train", "--env", env, "--core", core, *settings,
               "--seed", str(seed), "--total-frames", str(frames), "--run-dir", str(d), "--no-progress"]
        if (d / "checkpoints").is_dir():
            cmd.append("--resume")
        print(shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    result = json.loads((d / "result.json").read_text())
    with open(d / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["mean_return"] not in ("", "nan")]
    result["best_train"] = max((float(r["mean_return"]) for r in rows), default=float("nan"))  # nan: no episode ended
    result["curve"] = [(float(r["step"]), float(r["mean_return"])) for r in rows]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default=ENV)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--cores", nargs="+", default=[c for _, c in AGENTS])
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/continuous"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--prefix", default="", help="a command to run each training run under (e.g. a CPU lock)")
    ap.add_argument("--plain", action="store_true", help="the plain commands: the preset chosen from the env")
    args = ap.parse_args()
    agents = [(label.replace(" (M=32)", " (M = the rollout)") if args.plain else label, core)
              for label, core in AGENTS if core in args.cores]
    prefix = shlex.split(args.prefix)
    env = args.env
    res = {(core, s): run_one(args.out, env, core, s, args.frames, prefix, args.plain)
           for _, core in agents for s in args.seeds}

    def stat(core: str, f) -> str:
        v = [f(res[(core, s)]) for s in args.seeds]
        m = sum(v) / len(v)  # (not statistics.*: a nan, from a run too short to end an episode, must pass)
        return f"{m:.2f} ± {(sum((x - m) ** 2 for x in v) / len(v)) ** 0.5:.2f}"

    last100 = " final training return (last 100, per seed) |" if args.plain else ""
    lines = [f"| agent | greedy return (held out) | sampled return | best training return |{last100} frames/s |",
             "|---|---|---|---|---|" + ("---|" if args.plain else "")]
    for label, core in agents:
        fps = statistics.mean(res[(core, s)]["frames"] / res[(core, s)]["wall_s"] for s in args.seeds)
        final = ""
        if args.plain:  # cleanrl's metric, as docs/reference.md reports it
            per_seed = ", ".join(f"{res[(core, s)]['train_mean_return_last100']:.0f}" for s in args.seeds)
            final = f" {stat(core, lambda r: r['train_mean_return_last100'])} ({per_seed}) |"
        lines.append(f"| {label} | {stat(core, lambda r: r['eval']['greedy']['mean'])} | "
                     f"{stat(core, lambda r: r['eval']['sampled']['mean'])} | {stat(core, lambda r: r['best_train'])} |"
                     f"{final} {fps:,.0f} |")
    cmd = "python experiments/continuous/run.py" + (" --plain" if args.plain else "") \
        + ("" if env == ENV else f" --env {env}") \
        + ("" if args.seeds == [0, 1, 2] else f" --seeds {' '.join(map(str, args.seeds))}") \
        + ("" if args.frames == 1_000_000 else f" --frames {args.frames}") \
        + ("" if len(agents) == len(AGENTS) else f" --cores {' '.join(c for _, c in agents)}")
    name = ("continuous" if env == ENV else f"continuous-{slug(env)}") + ("-plain" if args.plain else "")
    scale = "returns on popgym's normalised scale, 1 = upright all episode" if env == ENV else "undiscounted env returns"
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{name}_table.md").write_text(
        f"Made by `{cmd}` on {env} (PPO{', the plain commands' if args.plain else ''}, {args.frames:,} frames per run; mean ± std over seeds "
        f"{args.seeds}; {scale}):\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (label, core) in enumerate(agents):
        for s in args.seeds:
            x, y = zip(*res[(core, s)]["curve"]) if res[(core, s)]["curve"] else ((), ())
            ax.plot(x, y, color=f"C{i}", alpha=0.75, label=label if s == args.seeds[0] else None)
    ax.set_title(f"{env} (PPO, {len(args.seeds)} seeds)")
    ax.set_xlabel("frames (agent steps, all envs)")
    ax.set_ylabel("training return (last 100 episodes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.docs / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
