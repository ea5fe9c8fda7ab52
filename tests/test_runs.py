"""Run folders that survive what users do: one writer at a time, a ``--resume`` that refuses what it
cannot continue, the last checkpoints kept with a fallback, temp files of dead saves cleaned, the
options of ``eval`` and ``plot`` all working, and one-line errors for file-system faults (a file
where a folder should be, a folder nobody may write, a full disk). Real files and real faults."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from rtrl.cli import main
from rtrl.runs import Run, RunError, load_checkpoint

# R2AC on Recall, 160 frames an update; a log row and a checkpoint after every update
ARGS = ["--preset", "small", "--num-envs", "16", "--num-actors", "0", "--total-frames", "320", "--eval-episodes", "0", "--log-every", "1", "--checkpoint-every", "1",
        "--no-progress"]


def train_cli(run: Path, *extra: str) -> int:
    return main(["train", "--run-dir", str(run), *ARGS, *extra])  # later flags win over ARGS


def error_line(err: str, command: str) -> str:
    """The CLI's one error line (``rtrl <command>: error: ...``); never a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"rtrl {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def steps(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(row["step"]) for row in csv.DictReader(f)]


def test_resume_refuses_a_folder_that_does_not_exist(tmp_path, capsys):
    assert train_cli(tmp_path / "typo", "--resume") == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "does not exist" in line and "without --resume" in line
    assert not (tmp_path / "typo").exists()


def test_a_run_that_died_before_its_first_checkpoint_can_be_retried_not_resumed(tmp_path, capsys):
    run = tmp_path / "run"
    diverging = ["--lr", "1e20", "--total-frames", "3200", "--checkpoint-every", "200"]
    assert train_cli(run, *diverging) == 2  # dies at its second update, long before a checkpoint
    capsys.readouterr()
    assert train_cli(run, *diverging, "--resume") == 2  # nothing to resume: it must not start from zero
    line = error_line(capsys.readouterr().err, "train")
    assert "no checkpoint" in line and "without --resume" in line
    assert train_cli(run) == 0  # the retry with a sane --lr starts the run over
    assert steps(run) == [160, 320]  # nothing of the dead attempt is left in the metrics


def test_deleting_a_corrupt_checkpoint_does_not_make_resume_restart_silently(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "160") == 0  # one update, one checkpoint
    (run / "checkpoints/latest.pt").write_bytes(b"garbage")
    assert train_cli(run, "--resume") == 2
    assert "corrupt" in error_line(capsys.readouterr().err, "train")
    (run / "checkpoints/latest.pt").unlink()  # what a user does next
    assert train_cli(run, "--resume") == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "no checkpoint" in line and "without --resume" in line
    assert steps(run) == [160]  # the metrics were left alone
    assert train_cli(run) == 0 and steps(run) == [160, 320]  # starting over is explicit


def test_the_last_checkpoints_are_kept_and_a_broken_latest_falls_back(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "640") == 0  # four updates, a checkpoint after each
    ckpts = run / "checkpoints"
    kept = [load_checkpoint(ckpts / name, "r2ac")["step"] for name in ("latest.pt", "latest-1.pt", "latest-2.pt")]
    assert kept == [640, 480, 320] and not (ckpts / "latest-3.pt").exists()
    (ckpts / "latest.pt").write_bytes(b"")  # zero bytes, as a full disk or a bad copy leaves it
    assert train_cli(run, "--resume", "--total-frames", "800") == 0
    err = capsys.readouterr().err
    assert "latest.pt" in err and "latest-1.pt" in err  # a warning says which one it fell back to
    ckpt = load_checkpoint(ckpts / "latest.pt", "r2ac")
    assert ckpt["step"] == 800 and ckpt["learner"]["updates"] == 5  # 3 from latest-1.pt, then 2 more
    assert steps(run) == [160, 320, 480, 640, 800]


def entry_data(path: Path, name_end: str) -> tuple[int, int]:
    """Offset and size of the stored bytes of the zip entry whose name ends with ``name_end``."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(name_end))
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def test_bytes_changed_inside_a_whole_checkpoint_fall_back_instead_of_diverging(tmp_path, capsys):
    """A bit flip on disk inside a whole archive: torch.load reads it as weights (here NaN); the
    entry's CRC-32 no longer matches, so the checkpoint is skipped as corrupt."""
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "480") == 0
    latest = run / "checkpoints/latest.pt"
    start, size = entry_data(latest, "data/0")  # the first tensor's bytes
    data = bytearray(latest.read_bytes())
    data[start : start + min(size, 64)] = b"\xff" * min(size, 64)  # 0xffffffff is a float32 NaN
    latest.write_bytes(bytes(data))
    with pytest.raises(RunError, match="CRC"):
        load_checkpoint(latest)
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "2"]) == 0  # the previous checkpoint evaluates
    err = capsys.readouterr().err
    assert "CRC" in err and "latest-1.pt" in err
    assert train_cli(run, "--resume", "--total-frames", "640") == 0  # resumes from it, with a warning
    err = capsys.readouterr().err
    assert "CRC" in err and "latest-1.pt" in err and "diverged" not in err
    assert load_checkpoint(latest, "r2ac")["learner"]["updates"] == 4  # 2 from latest-1.pt, then 2 more


def test_a_checkpoint_whose_weights_hold_nan_is_skipped_not_reported_as_divergence(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "480") == 0
    latest = run / "checkpoints/latest.pt"
    ckpt = torch.load(latest, weights_only=True)
    name = next(iter(ckpt["agent"]))
    ckpt["agent"][name].view(-1)[0] = float("nan")
    torch.save(ckpt, latest)  # a whole archive, CRCs right: the weights themselves are bad
    with pytest.raises(RunError, match=f"NaN/Inf in agent.{name}"):
        load_checkpoint(latest)
    capsys.readouterr()
    assert train_cli(run, "--resume", "--total-frames", "640") == 0
    err = capsys.readouterr().err
    assert f"agent.{name}" in err and "latest-1.pt" in err and "diverged" not in err
    assert torch.isfinite(load_checkpoint(latest, "r2ac")["agent"][name]).all()


class _RunsCode:
    def __reduce__(self):
        return (print, ("this checkpoint ran code",))


def test_zero_byte_and_unsafe_checkpoints_get_one_clear_sentence(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(RunError, match="corrupt"):
        load_checkpoint(empty)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "rtrl-checkpoint", "x": _RunsCode()}, unsafe)
    with pytest.raises(RunError) as err:
        load_checkpoint(unsafe)
    msg = str(err.value)
    assert "not a safe" in msg and "\n" not in msg
    for advice in ("weights_only", "trust", "can still be loaded"):  # never tell anyone to load it unsafely
        assert advice not in msg, msg


def test_one_writer_at_a_time(tmp_path):
    first = Run(tmp_path / "run", {"a": 1}, tensorboard=False)
    first.save({"step": 1}, "copy")
    with pytest.raises(RunError, match=f"in use by process {os.getpid()}"):
        Run(tmp_path / "run", {"a": 1}, resume=True, tensorboard=False)
    first.close()
    Run(tmp_path / "run", {"a": 1}, resume=True, tensorboard=False).close()  # free once the writer closed it


SAVE_AND_HANG = """
import sys, time
from rtrl.runs import Run

class Slow:  # pickled inside torch.save, after the temp file was opened
    def __reduce__(self):
        print("saving", flush=True)
        time.sleep(300)
        return (int, (0,))

Run(sys.argv[1], {"a": 1}, resume=True, tensorboard=False).save({"step": 2, "x": Slow()}, "copy")
"""


def test_temp_files_of_a_save_killed_midway_are_cleaned(tmp_path):
    run = Run(tmp_path / "run", {"a": 1}, tensorboard=False)
    run.save({"step": 1}, "copy")
    run.close()
    proc = subprocess.Popen([sys.executable, "-c", SAVE_AND_HANG, str(tmp_path / "run")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "saving"
        assert list((tmp_path / "run/checkpoints").glob(".*tmp*"))  # the save is under way
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    Run(tmp_path / "run", {"a": 1}, resume=True, tensorboard=False).close()
    assert not list((tmp_path / "run/checkpoints").glob(".*tmp*"))
    assert load_checkpoint(tmp_path / "run/checkpoints/latest.pt")["step"] == 1


def test_a_run_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "run").write_text("my notes")
    assert train_cli(tmp_path / "run") == 2
    assert "is a file" in error_line(capsys.readouterr().err, "train")
    assert (tmp_path / "run").read_text() == "my notes"


def test_a_full_disk(tmp_path, capsys):
    """``/dev/full`` answers every write with ENOSPC: a real full-disk error, without root or a
    small filesystem. A file of the run folder that links there sits on a full disk."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").symlink_to("/dev/full")
    assert train_cli(run) == 2
    line = error_line(capsys.readouterr().err, "train")
    assert "No space left on device" in line and "metrics.csv" in line
    # a checkpoint that cannot be written keeps the previous one and leaves no temp file behind
    r = Run(tmp_path / "other", {"a": 1}, tensorboard=False)
    r.save({"step": 1}, "copy")
    tmp = r.ckpt_dir / f".latest.pt.tmp{os.getpid()}"  # where this process writes its next checkpoint
    tmp.symlink_to("/dev/full")
    with pytest.raises(RunError, match="No space left on device"):
        r.save({"step": 2, "x": torch.zeros(100_000)}, "copy")
    r.close()
    assert not tmp.is_symlink() and load_checkpoint(r.ckpt_dir / "latest.pt")["step"] == 1


@contextmanager
def cannot_write(folder: Path):
    """``folder`` and its files read-only for this process: chmod 555 and 444, and for root, whom
    chmod does not stop, the effective user dropped to ``nobody`` while the block runs (the
    folder's parents stay readable)."""
    files = [f for f in folder.iterdir() if f.is_file()]
    for f in files:
        f.chmod(0o444)
    folder.chmod(0o555)
    root = os.geteuid() == 0
    if root:  # `nobody` may not read this interpreter's standard library: load what the CLI imports first
        import rtrl.rl.impala, rtrl.tasks.copy  # noqa: F401, E401
        os.seteuid(65534)
    try:
        yield
    finally:
        if root:
            os.seteuid(0)
        folder.chmod(0o755)
        for f in files:
            f.chmod(0o644)


def test_a_read_only_run_folder(capsys):
    base = Path(tempfile.mkdtemp())  # under /tmp, so that `nobody` can reach it
    base.chmod(0o755)
    try:
        empty, held = base / "empty", base / "held"
        empty.mkdir()
        r = Run(held, {"a": 1}, tensorboard=False)  # a run someone else owns, e.g. on a shared disk
        r.save({"step": 1}, "copy")
        r.close()
        with cannot_write(empty):
            assert train_cli(empty) == 2
        line = error_line(capsys.readouterr().err, "train")
        assert "Permission denied" in line and str(empty) in line
        with cannot_write(held):
            assert train_cli(held, "--resume") == 2
        assert "Permission denied" in error_line(capsys.readouterr().err, "train")
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG (matplotlib writes the metadata there)."""
    data, out, i = path.read_bytes(), {}, 8
    while i < len(data):
        n, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        if kind == b"tEXt":
            key, _, value = data[i + 8 : i + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        i += 12 + n
    return out


def test_eval_best_uses_the_best_checkpoint_and_says_when_there_is_none(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "640") == 0
    with open(run / "metrics.csv") as f:
        rows = [(float(r["mean_return"]), int(r["step"])) for r in csv.DictReader(f)]
    best_return = max(r for r, _ in rows)
    best_step = next(s for r, s in rows if r == best_return)  # the first checkpoint with the best return
    best = load_checkpoint(run / "checkpoints/best.pt", "r2ac")
    assert best["step"] == best_step and best["counters"]["best_return"] == best_return
    capsys.readouterr()
    assert main(["eval", str(run), "--checkpoint", "best", "--episodes", "4"]) == 0
    assert f'"frames": {best_step}' in capsys.readouterr().out
    (run / "checkpoints/best.pt").unlink()
    assert main(["eval", str(run), "--checkpoint", "best", "--episodes", "4"]) == 2
    assert "--checkpoint latest" in error_line(capsys.readouterr().err, "eval")


def test_plot_titles_mixed_runs_and_refuses_an_unknown_metric(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert train_cli(a, "--total-frames", "160") == 0
    assert train_cli(b, "--total-frames", "160", "--env", "rtrl-Recall6-v0") == 0
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "both.png")]) == 0
    title = png_text(tmp_path / "both.png")["Title"]
    assert "rtrl-Recall-v0" in title and "rtrl-Recall6-v0" in title
    capsys.readouterr()
    assert main(["plot", str(a), "--metric", "mean_retrun", "--out", str(tmp_path / "typo.png")]) == 2
    line = error_line(capsys.readouterr().err, "plot")
    assert "mean_retrun" in line and "mean_return" in line  # the metrics it does have
    assert not (tmp_path / "typo.png").exists()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_output_path_errors_are_one_line_for_every_format(tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="--format onnx needs the 'export' extra: pip install "
                                           "'rtrl[export]'")
    run = tmp_path / "run"
    assert train_cli(run, "--total-frames", "160") == 0
    (tmp_path / "notes").write_text("a file")
    for out, why in ((tmp_path / "no-such-dir/policy.pt", "does not exist"),
                     (tmp_path / "notes/policy.pt", "is a file, not a folder"),
                     (tmp_path, "it is a folder")):
        capsys.readouterr()
        assert main(["export", str(run), "--format", fmt, "--out", str(out)]) == 2
        line = error_line(capsys.readouterr().err, "export")
        assert f"cannot write {out}" in line and why in line, line
    good = tmp_path / "out" / "p.bin"
    good.parent.mkdir()
    assert main(["export", str(run), "--format", fmt, "--out", str(good)]) == 0
    assert sorted(f.name for f in good.parent.iterdir()) == ["p.bin", "p.bin.json"]  # no temp file left
