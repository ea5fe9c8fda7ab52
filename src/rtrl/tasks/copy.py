"""The copy task (the paper's Sec. 4.1): remember a bit pattern, then reproduce it.

A sequence of length ``2·level``: a random bit pattern of length ``L ~ U{1..level}``, then ``L``
"copy now" tokens, then padding with the same token. The target is the pattern, reproduced
during the ``L`` copy steps; only those positions are scored. Inputs are one-hot over
``{0, 1, copy}``. The metric is sequence accuracy: every scored position right.

Learning rules compared (one model: one-hot -> recurrent layer -> linear readout to 2 logits):

* ``rtrl``:  an element-wise layer (``cell``, default eLSTM; any of ``rtrl.nn.MODULES``), exact RTRL,
  one optimiser step every ``update_every`` steps (1 = fully online)
* ``tbptt``: the same layer, truncated BPTT with span ``update_every`` (state detached between spans)
* ``bptt``:  the same layer, full BPTT over the sequence, one step per sequence
* ``lstm``:  ``torch.nn.LSTM``, full BPTT (or truncated with ``update_every``)
* ``snap1``: a dense LSTM learning online by SnAp-1 (``rtrl.approx.SnAp1LSTM``), updates as ``rtrl``
* ``uoro``:  a dense LSTM learning online by UORO (``rtrl.approx.UOROLSTM``), updates as ``rtrl``
* ``rtrl2``: two stacked layers (``rtrl.nn.TwoLayer``), the top by exact RTRL, the bottom by BPTT
  within each span of ``update_every`` steps (the hybrid); updates as ``rtrl``
* ``tbptt2``: the two layers, truncated BPTT of both with span ``update_every``
* ``bptt2``: the two layers, full BPTT of both over the sequence, one step per sequence

``params`` > 0 picks the hidden size whose model has the parameter count closest to it
(:func:`hidden_size_for`), so that methods can be compared at equal size.

Steps with no scored position carry no loss: no optimiser step is taken there.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rtrl.nn
from rtrl.approx import SnAp1LSTM, UOROLSTM
from rtrl.budget import check_fits, training_bytes
from rtrl.checks import finite_inputs
from rtrl.nn import ELSTM
from rtrl.utils import ProgressBar, resolve_device
from rtrl.runs import Run, RunError, rng_state, set_rng_state

COPY, IGNORE = 2, -100
METHODS = ("rtrl", "tbptt", "bptt", "lstm", "snap1", "uoro", "rtrl2", "tbptt2", "bptt2")
TWO_LAYER = ("rtrl2", "tbptt2", "bptt2")  # rtrl.nn.TwoLayer of two ``cell`` layers
ELEMENTWISE = ("rtrl", "tbptt", "bptt") + TWO_LAYER  # the methods built of ``cell`` layers
DENSE_ONLINE = {"snap1": SnAp1LSTM, "uoro": UOROLSTM}  # dense LSTMs learning online, approximately
CELLS: dict[str, type] = getattr(rtrl.nn, "MODULES", {"elstm": ELSTM})  # the element-wise layers


@dataclass
class CopyConfig:
    """Everything a copy-task run depends on. ``CONFIGS`` holds the named presets."""

    method: str = "rtrl"
    cell: str = "elstm"  # the element-wise layer of rtrl/tbptt/bptt (and the *2 stacks): a key of rtrl.nn.MODULES
    update_every: int = 1  # rtrl/snap1/uoro: steps between updates; tbptt/lstm: the span; 0 = whole sequence; bptt ignores it
    level: int = 5  # patterns of 1..level bits, sequences of 2*level steps
    hidden_size: int = 128
    params: int = 0  # > 0: choose hidden_size for about this many parameters (overrides hidden_size)
    batch_size: int = 32
    lr: float = 3e-3
    betas: tuple = (0.9, 0.995)
    eps: float = 1e-9
    clip: float = 1.0
    max_sequences: int = 100_000  # training budget, in sequences (batch_size per batch)
    eval_every: int = 20  # batches between validations
    target_accuracy: float = 1.0  # stop once validation sequence accuracy reaches this
    valid_size: int = 500
    test_size: int = 1000
    seed: int = 0
    data_seed: int = 42
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:<i>"

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; choose one of {tuple(CELLS)}")
        if self.params < 0:
            raise ValueError(f"params must be >= 0 (0: use hidden_size), got {self.params}")
        if self.update_every < 0:
            raise ValueError(f"update_every must be >= 1 (or 0 for the whole sequence), got {self.update_every}")
        for name in ("level", "hidden_size", "batch_size", "max_sequences", "eval_every", "valid_size", "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        # the optimiser's numbers and the seeds, checked as R2AC and PPO check theirs (a clip < 0: ascent)
        for name in ("clip", "eps"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {tuple(self.betas)}")
        if not self.target_accuracy > 0:  # above 1: never stop early
            raise ValueError(f"target_accuracy must be a number > 0 (above 1: never stop early), got "
                             f"{self.target_accuracy}")
        for name in ("seed", "data_seed"):
            if not 0 <= getattr(self, name) < 2**62:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)}")
        resolve_device(self.device)

    @property
    def seq_len(self) -> int:
        return 2 * self.level

    @property
    def span(self) -> int:
        return self.seq_len if self.method in ("bptt", "bptt2") or self.update_every == 0 else self.update_every


CONFIGS = {
    # Minutes on a 2-core CPU; see docs/copy_task.md for why these sizes.
    "cpu": CopyConfig(),
    # The paper's setting (Sec. 4.1 and its code): far beyond a CPU.
    "paper": CopyConfig(level=500, hidden_size=2048, batch_size=128, lr=3e-5, max_sequences=500 * 9999,
                        eval_every=78, valid_size=999, test_size=999),
}


def make_batch(level: int, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``tokens (2·level, B)`` in ``{0, 1, COPY}`` and ``targets (2·level, B)`` in ``{0, 1, IGNORE}``."""
    T = 2 * level
    lengths = torch.randint(1, level + 1, (batch_size,), generator=generator)
    bits = torch.randint(0, 2, (T, batch_size), generator=generator)
    t = torch.arange(T)[:, None]
    in_pattern = t < lengths
    tokens = torch.where(in_pattern, bits, COPY)
    scored = (t >= lengths) & (t < 2 * lengths)
    source = torch.gather(bits, 0, (t - lengths).clamp(min=0))  # the bit seen L steps earlier
    targets = torch.where(scored, source, IGNORE)
    return tokens, targets


def make_split(level: int, size: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return make_batch(level, size, g)


class CopyModel(nn.Module):
    """One-hot input -> one recurrent layer (two for the ``*2`` methods) -> linear readout to two logits."""

    def __init__(self, method: str, hidden_size: int, cell: str = "elstm") -> None:
        super().__init__()
        self.method = method
        if method == "lstm":
            self.core = nn.LSTM(3, hidden_size)
        elif method in DENSE_ONLINE:
            self.core = DENSE_ONLINE[method](3, hidden_size)
        elif method in TWO_LAYER:
            self.core = rtrl.nn.TwoLayer(cell, 3, hidden_size, learning="rtrl" if method == "rtrl2" else "bptt")
        else:
            self.core = CELLS[cell](3, hidden_size, learning="rtrl" if method == "rtrl" else "bptt")
        self.head = nn.Linear(hidden_size, 2)

    def initial_state(self, batch_size: int, inference: bool = False):
        if self.method == "lstm":
            z = torch.zeros(1, batch_size, self.core.hidden_size, device=self.head.weight.device)
            return (z, z.clone())
        if self.method in DENSE_ONLINE:
            return self.core.initial_state(batch_size, sensitivities=not inference)
        return self.core.initial_state(batch_size, sensitivities=False if inference else None)

    def forward(self, tokens: Tensor, state):
        y, state = self.core(F.one_hot(tokens, 3).float(), state)
        return self.head(y), state


def count_parameters(method: str, hidden_size: int, cell: str = "elstm") -> int:
    """Trainable parameters of the copy-task model (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        model = CopyModel(method, hidden_size, cell)
    return sum(p.numel() for p in model.parameters())


def hidden_size_for(method: str, params: int, cell: str = "elstm") -> int:
    """The hidden size whose copy-task model has the parameter count closest to ``params``.

    The count grows with the hidden size, so a bisection finds it; a size the layer refuses (the
    RTU wants an even one) counts as the next size up."""

    def count(n: int) -> tuple[int, int]:
        for size in (n, n + 1):
            try:
                return count_parameters(method, size, cell), size
            except ValueError:
                continue
        raise ValueError(f"no valid hidden size near {n} for method {method!r}, cell {cell!r}")

    if params < 1:
        raise ValueError(f"params must be positive, got {params}")
    lo, hi = 1, 2
    while count(hi)[0] < params:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: count(lo) < params <= count(hi), or lo = 1
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid)[0] < params else (lo, mid)
    (c_lo, n_lo), (c_hi, n_hi) = count(lo), count(hi)
    return n_lo if params - c_lo < c_hi - params else n_hi


def detach_state(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) and not hasattr(state, "map") else state.detach()


@torch.no_grad()
def sequence_accuracy(model: CopyModel, tokens: Tensor, targets: Tensor, chunk: int = 1000) -> float:
    """Fraction of sequences whose every scored position is predicted right."""
    correct = 0
    for i in range(0, tokens.shape[1], chunk):
        tok, tgt = tokens[:, i : i + chunk], targets[:, i : i + chunk]
        logits, _ = model(tok, model.initial_state(tok.shape[1], inference=True))
        ok = (logits.argmax(-1) == tgt) | (tgt == IGNORE)
        correct += ok.all(0).sum().item()
    return correct / tokens.shape[1]


def train_copy(cfg: CopyConfig, run_dir: Optional[str | Path] = None, resume: bool = False,
               progress: bool = True) -> dict:
    """Train on the copy task; returns the final results (also written to ``run_dir``)."""
    cfg.validate()
    if cfg.params > 0:  # recorded in the run's config, so a resumed run checks the same size
        cfg = dataclasses.replace(cfg, hidden_size=hidden_size_for(cfg.method, cfg.params, cfg.cell))
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    check_fits(training_bytes(lambda: CopyModel(cfg.method, cfg.hidden_size, cfg.cell),
                              lambda m: m.initial_state(cfg.batch_size)), device,
               f"the copy task's {cfg.method} model with --hidden-size {cfg.hidden_size} and --batch-size "
               f"{cfg.batch_size}", "choose a smaller --hidden-size (or --params) or --batch-size")
    model = CopyModel(cfg.method, cfg.hidden_size, cfg.cell).to(device)  # initialised on the CPU: same on any device
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
    train_gen = torch.Generator().manual_seed(cfg.data_seed)
    valid = [t.to(device) for t in make_split(cfg.level, cfg.valid_size, cfg.data_seed + 1)]
    test = [t.to(device) for t in make_split(cfg.level, cfg.test_size, cfg.data_seed + 2)]
    run = None
    if run_dir is not None:
        run = Run(run_dir, dataclasses.asdict(cfg), resume=resume, may_change=("max_sequences", "device"),
                  defaults=dataclasses.asdict(CopyConfig()))
    counters = dict(sequences=0, updates=0, batches=0, best_acc=-1.0, solved_at=-1, wall=0.0)
    if run is not None and resume:
        ckpt = run.latest("copy")
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            train_gen.set_state(ckpt["data_rng"])
            set_rng_state(ckpt)
            counters.update(ckpt["counters"])

    bar = ProgressBar(cfg.max_sequences, counters["sequences"], progress, unit="seq")
    t_start, done = time.perf_counter() - counters["wall"], False
    recent_loss, acc = float("nan"), max(counters["best_acc"], 0.0)
    while counters["sequences"] < cfg.max_sequences and not done:
        tokens, targets = make_batch(cfg.level, cfg.batch_size, train_gen)
        scored = (targets != IGNORE).any(1).tolist()  # which steps carry a loss, read here on the CPU
        tokens, targets = tokens.to(device), targets.to(device)
        state, batch_loss, first_update = model.initial_state(cfg.batch_size), 0.0, counters["updates"]
        # the one-hot tokens are finite: the layers' per-segment NaN check (a host sync each step on a GPU) is
        # left out; the loss is summed where it is and read once a sequence (a NaN there stops the run below)
        with finite_inputs():
            for t0 in range(0, cfg.seq_len, cfg.span):
                tok, tgt = tokens[t0 : t0 + cfg.span], targets[t0 : t0 + cfg.span]
                logits, state = model(tok, state)
                state = detach_state(state)  # no-op for RTRL (already detached); truncation for TBPTT
                if not any(scored[t0 : t0 + cfg.span]):
                    continue
                loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=IGNORE,
                                       reduction="sum") / cfg.batch_size
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
                opt.step()
                counters["updates"] += 1
                batch_loss = batch_loss + loss.detach()
        batch_loss = float(batch_loss)
        if not math.isfinite(batch_loss):  # raised before any checkpoint holds the weights it stepped to
            raise FloatingPointError(f"non-finite loss ({batch_loss}) in updates "
                                     f"{first_update}..{counters['updates']}; lower --lr or raise --clip")
        counters["sequences"] += cfg.batch_size
        counters["batches"] += 1
        recent_loss = batch_loss if math.isnan(recent_loss) else 0.9 * recent_loss + 0.1 * batch_loss
        if counters["batches"] % cfg.eval_every == 0 or counters["sequences"] >= cfg.max_sequences:
            acc = sequence_accuracy(model, *valid)
            counters["wall"] = time.perf_counter() - t_start
            best = acc > counters["best_acc"]
            counters["best_acc"] = max(acc, counters["best_acc"])
            done = acc >= cfg.target_accuracy
            if done and counters["solved_at"] < 0:
                counters["solved_at"] = counters["sequences"]
            if run is not None:
                run.log(counters["sequences"], loss=recent_loss, valid_accuracy=acc,
                        updates=counters["updates"], wall_s=counters["wall"])
                run.save(_checkpoint(model, opt, train_gen, counters), "copy", best=best)
        bar.update(cfg.batch_size, loss=recent_loss, acc=acc, updates=counters["updates"])
    bar.close()

    if run is not None and (run.ckpt_dir / "best.pt").exists():
        from rtrl.runs import load_checkpoint

        model.load_state_dict(load_checkpoint(run.ckpt_dir / "best.pt", "copy")["model"])
    result = dict(
        method=cfg.method, cell=cfg.cell if cfg.method in ELEMENTWISE else None,
        update_every=cfg.update_every, level=cfg.level, hidden_size=cfg.hidden_size,
        parameters=sum(p.numel() for p in model.parameters()), seed=cfg.seed, test_accuracy=sequence_accuracy(model, *test), best_valid_accuracy=counters["best_acc"],
        sequences_to_solve=counters["solved_at"] if counters["solved_at"] >= 0 else None,
        sequences=counters["sequences"], updates=counters["updates"],
        wall_s=round(time.perf_counter() - t_start, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    )
    if run is not None:
        import json

        (run.path / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        _plot_curve(run)
        run.close()
    return result


def _checkpoint(model, opt, gen, counters) -> dict:
    return dict(step=counters["sequences"], model=model.state_dict(), optimizer=opt.state_dict(),
                data_rng=gen.get_state(), counters=dict(counters), **rng_state())


def _plot_curve(run: Run) -> None:
    rows = run.metrics()
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["valid_accuracy"] for r in rows])
    ax.set_xlabel("training sequences")
    ax.set_ylabel("validation sequence accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"copy task: {run.config['method']} (update every {run.config['update_every']})")
    fig.tight_layout()
    fig.savefig(run.path / "curve.png", dpi=110)
    plt.close(fig)


__all__ = ["CopyConfig", "CONFIGS", "METHODS", "CELLS", "make_batch", "make_split", "CopyModel", "train_copy",
           "sequence_accuracy", "count_parameters", "hidden_size_for", "RunError"]
