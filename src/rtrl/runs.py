"""Run folders: config, metrics (CSV + TensorBoard), atomic checkpoints, resume.

    runs/NAME/
      config.json        the run's configuration (a resumed run must match it)
      meta.json          versions, git commit, command line, start times
      metrics.csv        one row per log call, x-axis in the task's own step unit
      tb/                TensorBoard events
      checkpoints/latest.pt, best.pt   written atomically, loaded with weights_only=True

Re-running with ``--resume`` continues from ``latest.pt``; metric rows logged after that
checkpoint are dropped so the CSV never holds a step twice.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch


class RunError(RuntimeError):
    """A run folder cannot be used as asked (exists, mismatched config, bad checkpoint)."""


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, kind: Optional[str] = None) -> dict:
    """Load a checkpoint safely (``weights_only=True``: never executes code from the file).

    Raises ``RunError`` naming the file and the fix if it is missing, corrupt, or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle with code, truncated file: all the same to the user
        raise RunError(f"{path} is corrupt or not a safe rtrl checkpoint ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200]}); delete it to start over, or restore a good copy") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "rtrl-checkpoint":
        raise RunError(f"{path} is not an rtrl checkpoint (no 'format: rtrl-checkpoint' marker)")
    if kind is not None and ckpt.get("kind") != kind:
        raise RunError(f"{path} is a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")
    return ckpt


class Run:
    """One experiment's folder. ``resume=True`` continues an existing one, whose config must
    match except for the keys in ``may_change`` (e.g. the training budget) and the options
    added to the code after the run started, if they are at their value in ``defaults``."""

    def __init__(self, path: str | os.PathLike, config: dict, resume: bool = False,
                 tensorboard: bool = True, may_change: tuple[str, ...] = (), defaults: Optional[dict] = None) -> None:
        self.path = Path(path)
        config = json.loads(json.dumps(config))  # compare as saved: tuples become lists
        self.ckpt_dir = self.path / "checkpoints"
        cfg_file = self.path / "config.json"
        if cfg_file.exists():
            if not resume:
                raise RunError(f"run folder {self.path} already holds a run; pass --resume to continue it "
                               "or choose another run folder")
            saved = json.loads(cfg_file.read_text())
            defaults = json.loads(json.dumps(defaults or {}))
            new_at_default = {k for k, v in config.items() if k not in saved and k in defaults and defaults[k] == v}
            diff = {k: (saved.get(k), v) for k, v in config.items()
                    if saved.get(k) != v and k not in may_change and k not in new_at_default}
            if diff:
                raise RunError(f"--resume with a different config than {cfg_file}: "
                               + ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items()))
        self.path.mkdir(parents=True, exist_ok=True)
        self.config = config
        cfg_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        meta_file = self.path / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"starts": []}
        meta.update(torch=torch.__version__, python=platform.python_version(), git_commit=_git_commit())
        meta["starts"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv})
        meta_file.write_text(json.dumps(meta, indent=2) + "\n")
        self.csv_path = self.path / "metrics.csv"
        self._fields: Optional[list[str]] = None
        self._tb = None
        self._want_tb = tensorboard

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, state: dict, kind: str, best: bool = False) -> None:
        state = dict(state, format="rtrl-checkpoint", kind=kind)
        save_atomic(state, self.ckpt_dir / "latest.pt")
        if best:
            save_atomic(state, self.ckpt_dir / "best.pt")

    def latest(self, kind: str) -> Optional[dict]:
        """The latest checkpoint, or None for a fresh run; drops metric rows logged after it."""
        path = self.ckpt_dir / "latest.pt"
        if not path.exists():
            return None
        ckpt = load_checkpoint(path, kind)
        self._truncate_metrics(int(ckpt["step"]))
        return ckpt

    # -- metrics -------------------------------------------------------------------------------
    def log(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time": round(time.time(), 3), **metrics}
        if self._fields is None:
            if self.csv_path.exists() and self.csv_path.stat().st_size:
                with open(self.csv_path) as f:
                    self._fields = next(csv.reader(f))
            else:
                self._fields = list(row)
                with open(self.csv_path, "w", newline="") as f:
                    csv.writer(f).writerow(self._fields)
        with open(self.csv_path, "a", newline="") as f:
            csv.DictWriter(f, self._fields, extrasaction="ignore").writerow(row)
        tb = self._writer(step)
        if tb is not None:
            for k, v in metrics.items():
                tb.add_scalar(k, v, step)

    def metrics(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path) as f:
            return [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]

    def _truncate_metrics(self, step: int) -> None:
        if not self.csv_path.exists():
            return
        with open(self.csv_path) as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if r and float(r[0]) <= step]
        tmp = self.csv_path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(kept)
        os.replace(tmp, self.csv_path)
        self._purge_step = step + 1

    def _writer(self, step: int):
        if self._tb is None and self._want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a declared dependency; say so instead of failing a run
                print("tensorboard is not installed: metrics go to metrics.csv only", file=sys.stderr)
                self._want_tb = False
                return None
            self._tb = SummaryWriter(str(self.path / "tb"), purge_step=getattr(self, "_purge_step", None))
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
