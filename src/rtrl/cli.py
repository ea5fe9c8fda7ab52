"""The ``rtrl`` command: a thin shell over the library.

    rtrl copy                                  # the copy task, CPU-sized, exact online RTRL
    rtrl copy --method tbptt --update-every 2  # the same with truncated BPTT, span 2
    rtrl copy --config paper                   # the paper's setting (GPU-sized)
    rtrl copy --run-dir runs/copy-rtrl --resume
    rtrl train                                 # R2AC with an exact-RTRL core on a small memory task
    rtrl train --env popgym-RepeatPreviousEasy-v0 --core lstm --unroll 20
    rtrl train --algo ppo --env popgym-RepeatPreviousEasy-v0   # PPO, same cores, run folders and resume
    rtrl train --algo stream-ac --env rtrl-MemoryChain32-v0     # stream AC(λ), batch size 1, exact RTRL
    rtrl eval runs/rtrl-Recall-v0-rtrl-elstm-M10-s0
    rtrl export runs/rtrl-Recall-v0-rtrl-elstm-M10-s0 --format onnx   # the acting policy, state explicit
    rtrl plot runs/A runs/B --out curves.png
"""

from __future__ import annotations

import argparse
import gc
import dataclasses
import json
import signal
import sys
import threading

from rtrl.runs import RunError, describe_os_error
from rtrl.utils import tune_cpu_allocator


def _add_copy(sub) -> None:
    from rtrl.tasks.copy import CELLS, CONFIGS, METHODS, CopyConfig

    p = sub.add_parser("copy", help="train on the copy task (RTRL vs TBPTT vs BPTT vs LSTM vs SnAp-1 vs UORO)",
                       description="Train one model on the copy task and print its test sequence accuracy.")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu", help="named preset (default: cpu)")
    p.add_argument("--method", choices=METHODS, help="learning rule / model (default: rtrl)")
    p.add_argument("--cell", choices=sorted(CELLS), help="element-wise layer of rtrl/tbptt/bptt (default: elstm)")
    for f in dataclasses.fields(CopyConfig):
        if f.name in ("method", "cell", "betas"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=f"default: the preset's ({f.default} in 'cpu')")
    p.add_argument("--run-dir", help="run folder (default: runs/copy-<method>[-<cell>][-p<params>]-k<update_every>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_copy)


def _config(preset, args):
    """The preset with every option the user gave on the command line, validated."""
    fields = {f.name for f in dataclasses.fields(preset)}
    cfg = dataclasses.replace(preset, **{k: v for k, v in vars(args).items() if k in fields and v is not None})
    cfg.validate()
    return cfg


def _run_copy(args) -> int:
    from rtrl.tasks.copy import CONFIGS, ELEMENTWISE, train_copy

    cfg = _config(CONFIGS[args.config], args)
    cell = f"-{cfg.cell}" if cfg.cell != "elstm" and cfg.method in ELEMENTWISE else ""
    size = f"-p{cfg.params}" if cfg.params else ""
    run_dir = args.run_dir or f"runs/copy-{cfg.method}{cell}{size}-k{cfg.update_every}-s{cfg.seed}"
    print(f"run folder: {run_dir}", file=sys.stderr)
    return _print(train_copy(cfg, run_dir, resume=args.resume, progress=not args.no_progress))


def _add_train(sub) -> None:
    from rtrl.rl.agent import CORES
    from rtrl.rl.envs import ENV_NAMES
    from rtrl.rl.train import ALGOS, PRESETS, TrainConfig

    p = sub.add_parser("train", help="train an agent with R2AC (IMPALA + V-trace) or PPO, exact-RTRL core",
                       description="Train an agent with R2AC (--algo impala, the default) or PPO (--algo ppo). "
                       "Environments: " + ", ".join(ENV_NAMES))
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named preset (default: chosen from the env's family: ppo-vector, ppo-box, ppo-memory or "
                   "ppo-pixels, their -ff twin for --core none, r2ac-* with --algo impala; 'paper' is the paper's R2AC)")
    p.add_argument("--algo", choices=ALGOS, default=None,
                   help="ppo (the default), impala (R2AC), stream-ac or stream-q (stream AC(λ) or Q(λ): one "
                   "env, one update per step; docs/streaming.md)")
    p.add_argument("--core", choices=CORES, default=None, help="recurrent core (default: the preset's, rtrl-rtu)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("core", "algo"):
            continue
        flag, hint = "--" + f.name.replace("_", "-"), "default: the preset's"
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=hint)
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=hint)
    p.add_argument("--run-dir", help="run folder (default: runs/<env>-[ppo-]<core>-M<unroll>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on held-out seeds (greedy and sampled)")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=100)
    e.add_argument("--checkpoint", default="latest", choices=("latest", "best"),
                   help="latest (the newest readable) or best (the best mean training return over the last 100 "
                   "episodes at a checkpoint)")
    e.set_defaults(func=lambda a: _print(__import__("rtrl.rl.train", fromlist=["x"]).evaluate_run(
        a.run_dir, a.episodes, a.checkpoint)))

    x = sub.add_parser("export", help="write a run's acting policy (recurrent state as explicit inputs/outputs) "
                       "as TorchScript or ONNX",
                       description="Write the acting policy of a run's checkpoint, one step with its recurrent state as "
                       "explicit inputs and outputs: (obs, prev_reward, first, state) -> (action, value, policy_params, "
                       "next_state); see docs/api.md. Writes RUN_DIR/policy.pt or policy.onnx (and a .json beside it).")
    x.add_argument("run_dir")
    x.add_argument("--format", required=True, choices=("torchscript", "onnx"))
    x.add_argument("--out", help="the file to write (default: RUN_DIR/policy.pt or RUN_DIR/policy.onnx)")
    x.add_argument("--checkpoint", default="latest", choices=("latest", "best"))
    x.set_defaults(func=lambda a: _print({"exported": str(__import__("rtrl.rl.policy", fromlist=["x"]).export(
        a.run_dir, a.format, a.out, a.checkpoint))}))

    q = sub.add_parser("plot", help="learning curves of several runs in one PNG")
    q.add_argument("run_dirs", nargs="+")
    q.add_argument("--out", help="the PNG to write (default: curve.png in the run folder for one run and "
                   "mean_return, curve-<metric>.png for another metric; for several runs, curves.png in the "
                   "folder that holds them)")
    q.add_argument("--metric", default="mean_return", help="a column of the runs' metrics.csv (default: mean_return)")
    q.set_defaults(func=_run_plot)


def _run_plot(args) -> int:
    import os
    from pathlib import Path

    from rtrl.rl.plot import plot_runs

    out = args.out
    if out is None:
        if len(args.run_dirs) == 1:
            name = "curve.png" if args.metric == "mean_return" else f"curve-{args.metric}.png"
            out = Path(args.run_dirs[0]) / name
        else:
            out = Path(os.path.commonpath([os.path.abspath(d) for d in args.run_dirs])) / "curves.png"
    return _print({"plot": str(plot_runs(args.run_dirs, out, args.metric))})


def _print(obj) -> int:
    print(json.dumps(obj, indent=2))
    return 0


def _run_train(args) -> int:
    from rtrl.rl.train import PRESETS, TrainConfig, train
    from rtrl.rl.config import describe_preset, preset_for

    preset = args.preset
    if preset is None:  # chosen from the env's family, said in one line
        preset = preset_for(args.env or TrainConfig.env, args.algo or "ppo", core=args.core)
        print(f"rtrl: {describe_preset(preset)}; --preset or any option changes it", file=sys.stderr)
    cfg = _config(PRESETS[preset], args)
    algo = {"ppo": "ppo-", "stream-ac": "stream-", "stream-q": "streamq-"}.get(cfg.algo, "")
    run_dir = args.run_dir or f"runs/{cfg.env}-{algo}{cfg.core}-M{cfg.unroll}-s{cfg.seed}"
    print(f"run folder: {run_dir}", file=sys.stderr)
    return _print(train(cfg, run_dir, resume=args.resume, progress=not args.no_progress))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtrl", description="Exact Real-Time Recurrent Learning: "
                                     "experiments from the command line. Each subcommand has its own --help.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_copy(sub)
    _add_train(sub)
    args = parser.parse_args(argv)
    from rtrl.rl.actors import ActorError  # an env that keeps failing: one line, the run resumable

    tune_cpu_allocator()
    on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        # SIGTERM (kill, a cluster scheduler's preemption) stops a run the way Ctrl-C does: save, then exit
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except (ValueError, RunError, FloatingPointError, ImportError, ActorError) as e:
        print(f"rtrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder nobody may write, a missing file: one line, no traceback
        print(f"rtrl {args.command}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The ``rtrl`` program: :func:`main`, in a process that ends after it. Python's final garbage
    collection walks every object of torch's ~2000 modules, ~0.4 s at exit; frozen objects are
    skipped, so we freeze what the run leaves before the interpreter shuts down."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
