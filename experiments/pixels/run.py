"""Learning from pixels on a CPU: recurrent vs feedforward on Atari, Memory Gym and ProcGen.

    python experiments/pixels/run.py                        # R2AC: 3 tasks x 2 agents, 300k/200k/200k frames, 4 runs at a time
    python experiments/pixels/run.py --trainer ppo          # PPO's plain commands (the ppo-pixels preset): RTU vs feedforward
    python experiments/pixels/run.py --trainer ppo --tasks Breakout --parallel 2   # one task
    python experiments/pixels/run.py --scale 0.0001 --eval-episodes 0 --out runs/smoke   # smoke run

R2AC (the default, the paper's trainer): RTRL-eLSTM vs feedforward with the settings in COMMON.
PPO: `rtrl train --env ENV [--core none] --total-frames F`, nothing else, so the preset chosen from the
env (`ppo-pixels`: cleanrl's Atari recipe with the exact-RTRL RTU) does the rest.

The paper trains for 200 M frames on 48 CPU actors and a GPU; here each run is one `rtrl train`
process on one CPU thread, with the DQN ("nature") CNN instead of IMPALA's ResNet (5x cheaper on
a CPU, see docs/environments.md). Finished runs are reused and unfinished ones resumed, so
re-running continues the sweep (with a larger --scale it trains the finished runs further).
Writes docs/pixels_table.md and docs/pixels.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TASKS = {  # label: env, frames (the CPU budget of one session, two runs per core)
    "Breakout (Atari)": ("ALE/Breakout-v5", 300_000),
    "Mortar Mayhem Grid, 3 commands (Memory Gym)": ("MemoryGym-MortarMayhem-Grid-v0:command_count=3", 200_000),
    "Chaser, hard (ProcGen)": ("procgen-chaser-hard-v0", 200_000),
}
AGENTS = {  # trainer: [(label, core)]
    "r2ac": [("RTRL eLSTM", "rtrl-elstm"), ("feedforward", "none")],
    "ppo": [("PPO, exact-RTRL RTU (plain command)", "rtrl-rtu"), ("PPO, feedforward (plain command)", "none")],
}
COMMON = {  # what each trainer's runs add to --env, --core and the budget
    "r2ac": ["--preset", "small", "--stem", "nature", "--hidden-size", "256", "--unroll", "20", "--num-envs", "16",
             "--lr", "6e-4", "--checkpoint-every", "100"],
    "ppo": [],  # the plain command: the preset chosen from the env
}


def run_dir(out: Path, env: str, core: str, seed: int, trainer: str = "r2ac") -> Path:
    prefix = "" if trainer == "r2ac" else f"{trainer}-"  # R2AC's runs keep their earlier names
    return out / f"{prefix}{env.replace('/', '_').replace(':', '_').replace('=', '')}-{core}-s{seed}"


def run_one(out: Path, trainer: str, env: str, core: str, seed: int, frames: int, eval_episodes: int = 30) -> dict:
    d = run_dir(out, env, core, seed, trainer)
    done = d / "result.json"
    if not done.exists() or json.loads(done.read_text())["frames"] < frames:  # a larger budget continues it
        cmd = [sys.executable, "-m", "rtrl.cli", "train", "--env", env, "--core", core, "--seed", str(seed),
               "--total-frames", str(frames), "--run-dir", str(d), "--no-progress", *COMMON[trainer],
               "--eval-episodes", str(eval_episodes)]
        if (d / "checkpoints" / "latest.pt").exists():
            cmd.append("--resume")
        print(" ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((d / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trainer", choices=sorted(AGENTS), default="r2ac")
    ap.add_argument("--tasks", nargs="+", help="only the tasks whose label starts with one of these (default: all)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every task's frame budget")
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("runs/experiments/pixels"))
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--eval-episodes", type=int, default=30, help="whole games per evaluation (0: none, smoke runs)")
    ap.add_argument("--report-only", action="store_true", help="table and curves from the runs as they are")
    args = ap.parse_args()
    tasks = {label: v for label, v in TASKS.items() if not args.tasks or label.startswith(tuple(args.tasks))}
    if not tasks:
        ap.error(f"--tasks {' '.join(args.tasks)} matches no task; the tasks: {', '.join(TASKS)}")
    agents = AGENTS[args.trainer]
    jobs = [(env, core, s, int(frames * args.scale)) for env, frames in tasks.values() for _, core in agents
            for s in args.seeds]

    def folder(env: str, core: str, seed: int) -> Path:
        return run_dir(args.out, env, core, seed, args.trainer)

    if args.report_only:  # runs still training or evaluating: their row says so
        results = {j[:3]: json.loads((folder(*j[:3]) / "result.json").read_text())
                   for j in jobs if (folder(*j[:3]) / "result.json").exists()}
    else:
        with ThreadPoolExecutor(args.parallel) as pool:
            results = dict(zip([j[:3] for j in jobs],
                               pool.map(lambda j: run_one(args.out, args.trainer, *j, args.eval_episodes), jobs)))

    lines = ["| task | agent | seed | frames | training return (last 100 episodes) | greedy eval | sampled eval | wall |",
             "|---|---|---|---|---|---|---|---|"]
    for label, (env, _) in tasks.items():
        for name, core in agents:
            for s in args.seeds:
                if (env, core, s) not in results:
                    lines.append(f"| {label} | {name} | {s} | not finished | | | | |")
                    continue
                r = results[(env, core, s)]
                ev = r.get("eval", {})
                train_ret = r["train_mean_return_last100"]  # None if no episode ended (a smoke run)
                greedy, sampled = (f"{ev[k]['mean']:.2f}" if k in ev else "—" for k in ("greedy", "sampled"))
                lines.append(f"| {label} | {name} | {s} | {r['frames']:,} | "
                             f"{float('nan') if train_ret is None else train_ret:.2f} | "
                             f"{greedy} | {sampled} | {r['wall_s'] / 60:.0f} min |")
    cmd = "python experiments/pixels/run.py" + ("" if args.trainer == "r2ac" else f" --trainer {args.trainer}")
    cmd += "".join(f" --{k} {v}" for k, v in (("scale", args.scale), ("eval-episodes", args.eval_episodes))
                   if v != ap.get_default(k.replace("-", "_")))
    cmd += f" --tasks {' '.join(args.tasks)}" if args.tasks else ""
    stem = "pixels" if args.trainer == "r2ac" else f"pixels_{args.trainer}"
    args.docs.mkdir(exist_ok=True)
    (args.docs / f"{stem}_table.md").write_text(f"Made by `{cmd}`:\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, (label, (env, _)) in zip(axes[0], tasks.items()):
        for i, (name, core) in enumerate(agents):
            for s in args.seeds:
                if not (folder(env, core, s) / "metrics.csv").exists():  # --report-only before the run started
                    continue
                with open(folder(env, core, s) / "metrics.csv") as f:
                    rows = [r for r in csv.DictReader(f) if r["mean_return"]]
                ax.plot([float(r["step"]) for r in rows], [float(r["mean_return"]) for r in rows], color=f"C{i}",
                        label=name if s == args.seeds[0] else None)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("frames (agent steps)")
        ax.set_ylabel("training return (last 100 episodes)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.docs / f"{stem}.png", dpi=110)


if __name__ == "__main__":
    main()
