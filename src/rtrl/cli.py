"""The ``rtrl`` command: a thin shell over the library.

    rtrl copy                                  # the copy task, CPU-sized, exact online RTRL
    rtrl copy --method tbptt --update-every 2  # the same with truncated BPTT, span 2
    rtrl copy --config paper                   # the paper's setting (GPU-sized)
    rtrl copy --run-dir runs/copy-rtrl --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from rtrl.runs import RunError
from rtrl.utils import tune_cpu_allocator


def _add_copy(sub) -> None:
    from rtrl.tasks.copy import CONFIGS, METHODS, CopyConfig

    p = sub.add_parser("copy", help="train on the copy task (RTRL vs TBPTT vs BPTT vs LSTM)",
                       description="Train one model on the copy task and print its test sequence accuracy.")
    p.add_argument("--config", choices=sorted(CONFIGS), default="cpu", help="named preset (default: cpu)")
    p.add_argument("--method", choices=METHODS, help="learning rule / model (default: rtrl)")
    for f in dataclasses.fields(CopyConfig):
        if f.name in ("method", "betas"):
            continue
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=f"default: the preset's ({f.default} in 'cpu')")
    p.add_argument("--run-dir", help="run folder (default: runs/copy-<method>-k<update_every>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_copy)


def _run_copy(args) -> int:
    from rtrl.tasks.copy import CONFIGS, train_copy

    overrides = {k: v for k, v in vars(args).items()
                 if k in {f.name for f in dataclasses.fields(CONFIGS["cpu"])} and v is not None}
    cfg = dataclasses.replace(CONFIGS[args.config], **overrides)
    cfg.validate()
    run_dir = args.run_dir or f"runs/copy-{cfg.method}-k{cfg.update_every}-s{cfg.seed}"
    print(f"run folder: {run_dir}", file=sys.stderr)
    result = train_copy(cfg, run_dir, resume=args.resume, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rtrl", description="Exact Real-Time Recurrent Learning: "
                                     "experiments from the command line. Each subcommand has its own --help.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_copy(sub)
    args = parser.parse_args(argv)
    tune_cpu_allocator()
    try:
        return args.func(args)
    except (ValueError, RunError, FloatingPointError) as e:
        print(f"rtrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
