"""``torch.nn`` modules for element-wise recurrent layers, used like ``nn.LSTM``.

    m = ELSTM(input_size, hidden_size, learning="rtrl")   # or "bptt"
    state = m.initial_state(batch_size)
    y, state = m(x, state, reset=None)                    # x (T, B, D) -> y (T, B, N)
    loss(y).backward()

Reset semantics, written once: ``reset[t, b] = True`` means a new episode starts at step ``t``
of stream ``b``; the state (and, for RTRL, the sensitivities) is zeroed *before* step ``t``
is computed, so step ``t`` sees ``c_{t-1} = 0``.

Learning rules:

* ``"rtrl"``: the returned state carries ``c_T`` and the sensitivities, detached. After
  ``backward()`` every parameter of the layer holds the exact, untruncated gradient of this
  segment's loss: segment after segment with fixed weights, the gradients add up to the BPTT
  gradient of the whole sequence. The input ``x`` gets the within-segment gradient (exact RTRL
  for the layers below is the intractable multi-layer case).
* ``"bptt"``: plain backpropagation: gradient flows into the incoming state if it requires grad
  (pass ``state.detach()`` for truncated BPTT).

Under ``torch.no_grad()`` a state without sensitivities (``initial_state(B,
sensitivities=False)``) takes the cheap inference path: the scan alone.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtrl.checks import check_segment
from rtrl.cells import DiagonalLinearCell, ELSTMCell, ElementwiseCell
from rtrl.exact import RecurrentState, Sensitivities, exact_rtrl, scan

LEARNING_RULES = ("rtrl", "bptt")


class ElementwiseRNN(nn.Module):
    """One element-wise recurrent layer (``cell``) with an optional output gate.

    With ``output_gate=True``: ``y_t = c_t ⊙ σ(W_o [x_t; c_t] + b_o)`` (the paper's eLSTM output;
    feedforward, so its gradient is exact by plain backprop). Otherwise ``y_t = c_t``.
    """

    def __init__(self, cell: ElementwiseCell, learning: str = "rtrl", output_gate: bool = True) -> None:
        super().__init__()
        if learning not in LEARNING_RULES:
            raise ValueError(f"learning must be one of {LEARNING_RULES}, got {learning!r}")
        self.cell = cell
        self.learning = learning
        self.input_size = cell.input_size
        self.hidden_size = cell.hidden_size
        self.output_gate = nn.Linear(cell.input_size + cell.hidden_size, cell.hidden_size) if output_gate else None

    def initial_state(
        self, batch_size: int, sensitivities: Optional[bool] = None, device=None, dtype=None
    ) -> RecurrentState:
        """Zero state for ``batch_size`` streams, with zero sensitivities when learning by RTRL.

        ``sensitivities=False`` gives a state for the cheap inference path (use it under
        ``torch.no_grad()``, e.g. in actors)."""
        w = self.cell.weight_ih
        device, dtype = device or w.device, dtype or w.dtype
        if sensitivities is None:
            sensitivities = self.learning == "rtrl"
        c = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        sens = Sensitivities.zeros(self.cell, batch_size, device, dtype) if sensitivities else None
        return RecurrentState(c, sens)

    def forward(
        self, x: Tensor, state: Optional[RecurrentState] = None, reset: Optional[Tensor] = None
    ) -> tuple[Tensor, RecurrentState]:
        """``x (T, B, D)``, ``state`` for ``B`` streams (zero if ``None``), ``reset (T, B)`` bool.

        Returns ``y (T, B, N)`` and the state after the segment.
        """
        if state is None:
            state = self.initial_state(x.shape[1] if x.dim() == 3 else 1, device=x.device, dtype=x.dtype)
        self._check_inputs(x, state, reset)
        keep = None if reset is None else (~reset).to(x.dtype)
        cell = self.cell
        p = F.linear(x, cell.weight_ih, cell.bias).unflatten(-1, (cell.num_gates, self.hidden_size))
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or state.c.requires_grad or any(q.requires_grad for q in self.parameters())
        )
        if self.learning == "rtrl":
            if needs_grad and state.sensitivities is None:
                raise ValueError(
                    "learning='rtrl' needs sensitivities in the state to compute exact gradients; "
                    "start from m.initial_state(batch_size) (or run under torch.no_grad() for inference)"
                )
            c0 = state.c.detach()
        else:
            c0 = state.c
        if not needs_grad and state.sensitivities is None:
            with torch.no_grad():  # the cheap inference path: the scan alone
                c = scan(cell, p, c0, keep)[1]
            sens = None
        else:
            c, sens = exact_rtrl(cell, x, p, c0, keep, state.sensitivities)
        y = self._readout(x, c)
        c_last = c[-1].detach() if self.learning == "rtrl" else c[-1]
        return y, RecurrentState(c_last, sens)

    def _readout(self, x: Tensor, c: Tensor) -> Tensor:
        if self.output_gate is None:
            return c
        return c * torch.sigmoid(self.output_gate(torch.cat((x, c), -1)))

    def _check_inputs(self, x: Tensor, state: RecurrentState, reset: Optional[Tensor]) -> None:
        name = type(self).__name__
        if isinstance(state, RecurrentState) and state.sensitivities is not None and self.learning != "rtrl":
            raise ValueError(f"the state carries RTRL sensitivities but {name} learns by {self.learning!r}; "
                             "use initial_state() of this module")
        shapes = [e.shape[1:] for e in Sensitivities.zeros(self.cell, 0, device="meta")]
        check_segment(name, x, self.input_size, self.cell.weight_ih, state, self.hidden_size, shapes, reset)


class ELSTM(ElementwiseRNN):
    """The paper's eLSTM layer: element-wise LSTM recurrence plus the output gate.

    Args:
        input_size: ``D``. hidden_size: ``N``.
        learning: ``"rtrl"`` (exact, untruncated) or ``"bptt"``.
        forget_bias: added to the forget gate's bias at init (0 in the paper).
        output_gate: ``y = c ⊙ σ(W_o [x; c] + b_o)`` if True, else ``y = c``.
    """

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl",
                 forget_bias: float = 0.0, output_gate: bool = True) -> None:
        super().__init__(ELSTMCell(input_size, hidden_size, forget_bias), learning, output_gate)


class DiagonalLinearRNN(ElementwiseRNN):
    """A real diagonal linear recurrent layer (:class:`rtrl.cells.DiagonalLinearCell`)."""

    def __init__(self, input_size: int, hidden_size: int, learning: str = "rtrl",
                 output_gate: bool = True) -> None:
        super().__init__(DiagonalLinearCell(input_size, hidden_size), learning, output_gate)
