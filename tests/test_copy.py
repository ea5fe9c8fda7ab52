"""The copy task: data format, a tiny real training run, run folders, resume, bad configs."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from rtrl.runs import Run, RunError, load_checkpoint
from rtrl.tasks.copy import (CELLS, COPY, IGNORE, CopyConfig, count_parameters, hidden_size_for, make_batch,
                             make_split, train_copy)


def test_batch_format():
    tokens, targets = make_batch(level=6, batch_size=200, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == targets.shape == (12, 200)
    for b in range(200):
        tok, tgt = tokens[:, b], targets[:, b]
        L = int((tok != COPY).sum())
        assert 1 <= L <= 6
        assert (tok[:L] != COPY).all() and (tok[L:] == COPY).all()  # pattern, then copy/pad tokens
        assert torch.equal(tgt[L : 2 * L], tok[:L])  # the pattern, reproduced right after it
        assert (tgt[:L] == IGNORE).all() and (tgt[2 * L :] == IGNORE).all()  # nothing else scored
    lengths = (tokens != COPY).sum(0)
    assert set(lengths.tolist()) == set(range(1, 7))  # every length occurs


def test_data_is_deterministic_per_seed():
    a, b, c = make_split(5, 64, seed=3), make_split(5, 64, seed=3), make_split(5, 64, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


TINY = dict(level=2, hidden_size=32, batch_size=16, lr=1e-2, eval_every=10, valid_size=200, test_size=400)


def test_online_rtrl_learns_what_span_one_tbptt_cannot():
    # patterns of 1-3 bits; guessing gets (1/2 + 1/4 + 1/8) / 3 = 0.29 of the sequences right, and
    # span-1 TBPTT gets ~0.6 by decoding what random, untrained input weights happen to keep
    # (measured: RTRL 0.955, TBPTT 0.605 after 3000 sequences)
    kw = dict(TINY, level=3, max_sequences=3000)
    rtrl = train_copy(CopyConfig(method="rtrl", target_accuracy=0.99, **kw), progress=False)
    tbptt = train_copy(CopyConfig(method="tbptt", update_every=1, **kw), progress=False)
    assert rtrl["test_accuracy"] > 0.85, rtrl
    assert tbptt["test_accuracy"] < 0.7, tbptt


def test_run_folder_and_exact_resume(tmp_path):
    cfg = CopyConfig(method="rtrl", max_sequences=640, target_accuracy=2.0, **TINY)
    straight = train_copy(dataclasses.replace(cfg, max_sequences=960), tmp_path / "straight", progress=False)
    first = train_copy(cfg, tmp_path / "resumed", progress=False)
    assert first["sequences"] == 640
    with pytest.raises(RunError, match="--resume"):
        train_copy(cfg, tmp_path / "resumed", progress=False)
    with pytest.raises(RunError, match="hidden_size"):
        train_copy(dataclasses.replace(cfg, hidden_size=8), tmp_path / "resumed", resume=True, progress=False)
    resumed = train_copy(dataclasses.replace(cfg, max_sequences=960), tmp_path / "resumed", resume=True,
                         progress=False)
    assert resumed["updates"] == straight["updates"] and resumed["sequences"] == 960
    a = load_checkpoint(tmp_path / "straight/checkpoints/latest.pt", "copy")["model"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/latest.pt", "copy")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit-identical to an uninterrupted run
    run = tmp_path / "resumed"
    for name in ("config.json", "meta.json", "metrics.csv", "result.json", "curve.png"):
        assert (run / name).is_file(), name
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == sorted(set(steps), key=int)  # no step logged twice
    assert any((run / "tb").iterdir())
    assert json.loads((run / "config.json").read_text())["hidden_size"] == 32


def test_corrupt_or_foreign_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(RunError, match="not an rtrl checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    torch.save({"format": "rtrl-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(RunError, match="not a safe rtrl checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("method", ["snap1", "uoro"])
def test_approximate_rtrl_methods_learn_and_resume(tmp_path, method):
    """The dense LSTM learning online by SnAp-1 / UORO: its loss falls, and an interrupted run
    resumes bit-identically (UORO's random signs come from the checkpointed RNG)."""
    cfg = CopyConfig(method=method, max_sequences=320, target_accuracy=2.0, **dict(TINY, hidden_size=16))
    straight = train_copy(dataclasses.replace(cfg, max_sequences=480), tmp_path / "straight", progress=False)
    train_copy(cfg, tmp_path / "resumed", progress=False)
    resumed = train_copy(dataclasses.replace(cfg, max_sequences=480), tmp_path / "resumed", resume=True,
                         progress=False)
    assert resumed["updates"] == straight["updates"] > 0
    a = load_checkpoint(tmp_path / "straight/checkpoints/latest.pt", "copy")["model"]
    b = load_checkpoint(tmp_path / "resumed/checkpoints/latest.pt", "copy")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [line.split(",") for line in (tmp_path / "straight/metrics.csv").read_text().splitlines()]
    losses = [float(r[rows[0].index("loss")]) for r in rows[1:]]
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("cell", sorted(set(CELLS) - {"elstm"}))
def test_cell_choice(cell):
    """``cell`` picks the element-wise layer of the rtrl method (from ``rtrl.nn.MODULES``)."""
    res = train_copy(CopyConfig(method="rtrl", cell=cell, max_sequences=32, **dict(TINY, hidden_size=8)),
                     progress=False)
    assert res["cell"] == cell and res["updates"] > 0
    assert res["parameters"] == count_parameters("rtrl", 8, cell)


@pytest.mark.parametrize("method, cell", [("rtrl", "elstm"), ("lstm", "elstm"), ("snap1", "elstm"),
                                          ("uoro", "elstm"), ("rtrl", sorted(CELLS)[-1])])
def test_hidden_size_for_a_parameter_count(method, cell):
    target = 20_000
    n = hidden_size_for(method, target, cell)
    got = abs(count_parameters(method, n, cell) - target)
    for other in (n - 2, n - 1, n + 1, n + 2):  # no valid size nearby comes closer
        try:
            assert got <= abs(count_parameters(method, other, cell) - target), other
        except ValueError:  # a size the layer refuses
            pass
    res = train_copy(CopyConfig(method=method, cell=cell, params=500, max_sequences=16, **TINY), progress=False)
    assert res["hidden_size"] == hidden_size_for(method, 500, cell) != TINY["hidden_size"]


@pytest.mark.parametrize("kw, match", [
    (dict(method="gru"), "unknown method"),
    (dict(cell="gru"), "unknown cell"),
    (dict(params=-1), "params"),
    (dict(update_every=-1), "update_every"),
    (dict(level=0), "level"),
    (dict(lr=float("nan")), "lr"),
    (dict(clip=-1.0), "clip must be a positive number"),  # was gradient ascent
    (dict(clip=0.0), "clip must be a positive number"),
    (dict(eps=0.0), "eps must be a positive number"),
    (dict(betas=(0.9, 1.0)), r"betas must be two numbers in \[0, 1\)"),
    (dict(target_accuracy=0.0), "target_accuracy"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(data_seed=-5), "data_seed must be an integer >= 0"),
])
def test_bad_configs(kw, match):
    with pytest.raises(ValueError, match=match):
        CopyConfig(**kw).validate()


def test_a_model_too_big_for_memory_is_refused_with_the_figure(tmp_path, capsys):
    from rtrl.cli import main

    assert main(["copy", "--hidden-size", "1000000000", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("rtrl copy: error: ")]
    assert len(line) == 1 and "Traceback" not in err, err
    assert "--hidden-size 1000000000" in line[0] and "needs at least" in line[0] and "free" in line[0]
    assert not (tmp_path / "run").exists()


def test_resume_accepts_options_added_later_only_at_their_default(tmp_path):
    """A run folder from an older version lacks newer config keys: at their default they resume."""
    first = Run(tmp_path / "run", {"lr": 1.0}, tensorboard=False)
    first.save({"step": 0}, "copy")  # --resume needs a checkpoint
    first.close()
    defaults = {"lr": 1.0, "cell": "elstm"}
    Run(tmp_path / "run", {"lr": 1.0, "cell": "elstm"}, resume=True, tensorboard=False, defaults=defaults).close()
    Run(tmp_path / "run2", {"lr": 1.0}, tensorboard=False).close()
    with pytest.raises(RunError, match="cell"):
        Run(tmp_path / "run2", {"lr": 1.0, "cell": "lru"}, resume=True, tensorboard=False, defaults=defaults)
