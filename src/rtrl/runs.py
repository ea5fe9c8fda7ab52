"""Run folders: config, metrics (CSV + TensorBoard), atomic checkpoints, resume.

    runs/NAME/
      config.json        the run's configuration (a resumed run must match it)
      meta.json          versions, git commit, command line, start times
      metrics.csv        one row per log call, x-axis in the task's own step unit
      tb/                TensorBoard events
      checkpoints/       latest.pt, latest-1.pt, latest-2.pt (the last three, newest first) and
                         best.pt; CPU tensors, written atomically, loaded with weights_only=True
                         after every entry's CRC-32 is checked, refused if a tensor holds NaN/Inf
      .lock              held by the one process writing the run (its PID inside)

Re-running with ``--resume`` continues from the newest readable checkpoint (an unreadable
``latest.pt``: empty, truncated, bytes changed on disk, NaN/Inf weights, falls back to
``latest-1.pt``, with a warning); metric rows logged after that
checkpoint are dropped so the CSV never holds a step twice. ``--resume`` refuses a folder that
does not exist or holds no checkpoint; a run that stopped before its first checkpoint is started
over by running without ``--resume``. One writer at a time: a second process is refused with the
PID of the first (an ``flock`` that the kernel drops when its holder dies, ``kill -9`` included).
File-system faults (a full disk, a folder nobody may write) become one-line ``RunError``s.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

try:
    import fcntl
except ImportError:  # Windows: no flock; run folders there are not locked
    fcntl = None

KEEP = 3  # checkpoints kept: latest.pt, latest-1.pt, latest-2.pt


class RunError(RuntimeError):
    """A run folder cannot be used as asked (exists, mismatched config, bad checkpoint)."""


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_temp(obj: Any, path: Path) -> Path:
    """``torch.save`` to a hidden temp file beside ``path`` and fsync it; a failed write (a full
    disk, an interrupt) removes it again. A process killed mid-write leaves it: :class:`Run` removes
    such files when it opens the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def save_atomic(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a crash never leaves half a file."""
    os.replace(_write_temp(obj, path), path)


_FIXES = {
    errno.ENOSPC: "free some space on that disk, or choose a run folder on another one (--run-dir)",
    errno.EDQUOT: "free some of your disk quota, or choose a run folder elsewhere (--run-dir)",
    errno.EACCES: "choose a run folder you may write (--run-dir), or change its permissions",
    errno.EPERM: "choose a run folder you may write (--run-dir), or change its permissions",
    errno.EROFS: "that disk is read-only: choose a run folder on another one (--run-dir)",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
}


def describe_os_error(e: OSError, path: Optional[Path] = None) -> str:
    """One line for a file-system error: what failed, on which file, and what to do about it."""
    where = e.filename if e.filename is not None else path
    if e.strerror is None:  # raised with a message of its own, not by the system
        return str(e) or type(e).__name__
    what = f"cannot use {where}: {e.strerror}" if where is not None else e.strerror
    return f"{what}; {_FIXES.get(e.errno, 'check that path and try again')}"


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Turn a file-system error in the block into a one-line ``RunError`` naming ``path``."""
    try:
        yield
    except OSError as e:
        raise RunError(describe_os_error(e, path)) from None


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The kept checkpoints of a run that exist, newest first (``latest.pt``, ``latest-1.pt``, ...)."""
    names = ["latest.pt"] + [f"latest-{i}.pt" for i in range(1, KEEP)]
    return [ckpt_dir / name for name in names if (ckpt_dir / name).is_file()]


def load_newest(ckpt_dir: Path, kind: Optional[str] = None) -> dict:
    """The newest readable checkpoint in ``ckpt_dir``: an unreadable one (corrupt, empty, unsafe) is
    skipped with a warning for the next older one. Raises ``RunError`` if none is readable."""
    files, unreadable = checkpoint_files(Path(ckpt_dir)), []
    if not files:
        raise RunError(f"no checkpoint in {ckpt_dir}")
    for path in files:
        try:
            ckpt = load_checkpoint(path)
        except RunError as e:
            unreadable.append(str(e))
            continue
        if unreadable:
            print(f"warning: {'; '.join(unreadable)}; using {path.name} (step {ckpt.get('step')}) instead",
                  file=sys.stderr, flush=True)
        _check_kind(ckpt, path, kind)
        return ckpt
    raise RunError(f"no readable checkpoint in {ckpt_dir}: {'; '.join(unreadable)}; restore a good copy, or delete "
                   "the unreadable files and run without --resume to start over")


def load_checkpoint(path: Path, kind: Optional[str] = None) -> dict:
    """Load a checkpoint safely (``weights_only=True``: never executes code from the file).

    Raises ``RunError`` naming the file and the fix if it is missing, corrupt, or not ours.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"no checkpoint at {path}")
    try:
        verify_archive(path)
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except RunError:
        raise
    except OSError as e:
        raise RunError(describe_os_error(e, path)) from None
    except Exception as e:  # empty or truncated file, another kind of file, a pickle with code
        if path.stat().st_size == 0:
            why = "an empty file"
        elif not zipfile.is_zipfile(path):  # torch.save writes zip archives; torch's messages here misdirect
            why = "not a whole torch archive: truncated, or another kind of file"
        elif "Weights only load failed" in str(e):
            # a whole archive that holds code; torch's own message advises loading it unsafely: never pass that on
            raise RunError(f"{path} is not a safe rtrl checkpoint: it holds objects other than tensors and plain "
                           "data, which could run code when loaded, so rtrl refuses it; use a checkpoint that rtrl "
                           "wrote") from None
        else:
            why = f"{type(e).__name__}: {next(iter(str(e).splitlines()), '')[:200]}"
        raise RunError(f"{path} is corrupt ({why}); restore a good copy") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "rtrl-checkpoint":
        raise RunError(f"{path} is not an rtrl checkpoint (no 'format: rtrl-checkpoint' marker)")
    bad = non_finite_entry(ckpt)
    if bad is not None:  # the weights of a run that went wrong, or bytes changed before the CRCs were written
        raise RunError(f"{path} holds NaN/Inf in {bad}: unusable weights; restore a good copy")
    _check_kind(ckpt, path, kind)
    return ckpt


def verify_archive(path: Path) -> None:
    """Check every entry of a checkpoint (a zip archive, as ``torch.save`` writes it) against the
    CRC-32 stored with it: bytes changed on disk are found here, where ``torch.load`` would read
    them as weights. Not a zip archive: left to ``torch.load``, whose failure says what it is."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as e:
        raise RunError(f"{path} is corrupt (a damaged archive: {e}); restore a good copy") from None
    if bad is not None:
        raise RunError(f"{path} is corrupt (its entry {bad} fails its CRC check: the file changed after it "
                       "was written); restore a good copy")


def non_finite_entry(obj: Any, where: str = "") -> Optional[str]:
    """The key path (``agent.core.weight``) of the first floating-point tensor in ``obj`` (nested
    dicts, lists, tuples) that holds NaN or Inf; ``None`` if every one is finite."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not bool(torch.isfinite(obj).all()):
            return where or "a tensor"
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        bad = non_finite_entry(value, f"{where}.{key}" if where else str(key))
        if bad is not None:
            return bad
    return None


def to_cpu(obj: Any) -> Any:
    """``obj`` (nested dicts, lists, tuples of tensors and plain data) with every tensor on the CPU,
    detached: a checkpoint loads anywhere, whichever device wrote it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        items = [to_cpu(v) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    return obj


def rng_state() -> dict:
    """The random number generators' states for a checkpoint: the CPU's (``torch_rng``) and, in a
    process that has used CUDA, every CUDA device's (``cuda_rng``), so that what a run draws on a
    GPU (UORO's random signs, dropout) continues exactly after ``--resume``."""
    state = dict(torch_rng=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(ckpt: dict) -> None:
    """Restore what :func:`rng_state` saved; a CUDA state is restored for the devices present (a run
    resumed on a CPU ignores it)."""
    torch.set_rng_state(ckpt["torch_rng"])
    cuda = ckpt.get("cuda_rng") or []
    if cuda and torch.cuda.is_available():
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, i)


def _check_kind(ckpt: dict, path: Path, kind: Optional[str]) -> None:
    if kind is not None and ckpt.get("kind") != kind:
        raise RunError(f"{path} is a {ckpt.get('kind')!r} checkpoint, expected {kind!r}")


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the block runs, then deliver them to the handlers they had:
    a training step and its counters are never cut apart, so a checkpoint saved on an interrupt
    has counters that match its weights. Only the main thread gets signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(s, handler)
    if held:
        signal.raise_signal(held[0])  # now, between steps (after an exception, it is dropped with the run)


class Run:
    """One experiment's folder. ``resume=True`` continues an existing one, whose config must
    match except for the keys in ``may_change`` (e.g. the training budget) and the options
    added to the code after the run started, if they are at their value in ``defaults``."""

    def __init__(self, path: str | os.PathLike, config: dict, resume: bool = False,
                 tensorboard: bool = True, may_change: tuple[str, ...] = (), defaults: Optional[dict] = None) -> None:
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.csv_path = self.path / "metrics.csv"
        self._fields: Optional[list[str]] = None
        self._tb = None
        self._want_tb = tensorboard
        self._lock_file = None
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run folder: choose another --run-dir")
        if resume and not self.path.is_dir():
            raise RunError(f"--resume: run folder {self.path} does not exist; check the path, or run without "
                           "--resume to start a new run there")
        with _writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        try:
            self._open(json.loads(json.dumps(config)), resume, may_change, defaults)  # as saved: tuples become lists
        except BaseException:
            self.close()  # frees the lock at once, not whenever this object is collected
            raise

    def _lock(self) -> None:
        """Hold ``.lock`` for the life of this object: one writer at a time. An ``flock`` belongs to
        the open file, so the kernel drops it when its process dies, ``kill -9`` included."""
        if fcntl is None:
            return
        f = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip()
            f.close()
            holder = f"process {pid}" if pid else "another process"
            raise RunError(f"run folder {self.path} is in use by {holder}: wait for it to finish, or stop it "
                           f"({'kill ' + pid if pid else 'kill it'}), then try again") from None
        try:  # the PID, for the error message of the next process that tries
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except OSError:
            f.close()
            raise
        self._lock_file = f

    def _open(self, config: dict, resume: bool, may_change: tuple[str, ...], defaults: Optional[dict]) -> None:
        """Under the lock: clean up after dead saves, check what is asked against what the folder
        holds, then write the config and the start to ``meta.json``."""
        cfg_file = self.path / "config.json"
        with _writing(self.path):  # temp files of saves that were killed: we hold the lock, no one else writes
            for tmp in [*self.ckpt_dir.glob(".*.tmp*"), *self.path.glob("metrics.tmp")]:
                tmp.unlink()
        has_run, has_checkpoint = cfg_file.exists(), bool(checkpoint_files(self.ckpt_dir))
        if resume and not has_run:
            raise RunError(f"--resume: {self.path} holds no run (no config.json); run without --resume to start one")
        if has_run and not resume and has_checkpoint:
            raise RunError(f"run folder {self.path} already holds a run; pass --resume to continue it "
                           "or choose another run folder")
        if resume:
            saved = json.loads(cfg_file.read_text())
            defaults = json.loads(json.dumps(defaults or {}))
            new_at_default = {k for k, v in config.items() if k not in saved and k in defaults and defaults[k] == v}
            diff = {k: (saved.get(k), v) for k, v in config.items()
                    if saved.get(k) != v and k not in may_change and k not in new_at_default}
            if diff:
                raise RunError(f"--resume with a different config than {cfg_file}: "
                               + ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in diff.items()))
            if not has_checkpoint:
                raise RunError(f"--resume: {self.path} holds no checkpoint to continue from (the run stopped before "
                               "its first one); run without --resume to start it over")
        elif has_run:  # it stopped before its first checkpoint: nothing to continue, and its rows would mislead
            print(f"note: {self.path} holds a run that stopped before its first checkpoint; starting it over",
                  file=sys.stderr)
            with _writing(self.path):
                for name in ("metrics.csv", "result.json", "eval.json"):
                    (self.path / name).unlink(missing_ok=True)
                shutil.rmtree(self.path / "tb", ignore_errors=True)
        self.config = config
        meta_file = self.path / "meta.json"
        with _writing(self.path):
            cfg_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"starts": []}
            meta.update(torch=torch.__version__, python=platform.python_version(), git_commit=_git_commit())
            meta["starts"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv})
            meta_file.write_text(json.dumps(meta, indent=2) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------
    def save(self, state: dict, kind: str, best: bool = False) -> None:
        """Write a checkpoint atomically as ``latest.pt``, keeping the ``KEEP - 1`` before it as
        ``latest-1.pt``, ... (a crash between the renames loses none: every file stays whole)."""
        state = dict(to_cpu(state), format="rtrl-checkpoint", kind=kind)
        kept = [self.ckpt_dir / "latest.pt"] + [self.ckpt_dir / f"latest-{i}.pt" for i in range(1, KEEP)]
        with _writing(self.ckpt_dir):
            tmp = _write_temp(state, kept[0])
            for newer, older in zip(kept[-2::-1], kept[:0:-1]):  # latest-1 -> latest-2, then latest -> latest-1
                if newer.exists():
                    os.replace(newer, older)
            os.replace(tmp, kept[0])
            if best:
                save_atomic(state, self.ckpt_dir / "best.pt")

    def latest(self, kind: str) -> dict:
        """The newest readable checkpoint (see :func:`load_newest`); drops metric rows logged after it."""
        ckpt = load_newest(self.ckpt_dir, kind)
        self._truncate_metrics(int(ckpt["step"]))
        return ckpt

    # -- metrics -------------------------------------------------------------------------------
    def log(self, step: int, **metrics: float) -> None:
        row = {"step": step, "time": round(time.time(), 3), **metrics}
        with _writing(self.csv_path):
            self._append(row)
        tb = self._writer(step)
        if tb is not None:
            for k, v in metrics.items():
                tb.add_scalar(k, v, step)

    def _append(self, row: dict) -> None:
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
        with _writing(self.csv_path):
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
        """Flush TensorBoard and let go of the run folder (its lock). Idempotent."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
