"""The Recurrent Trace Unit's recurrence (Elelimy et al. 2024), complex and diagonal, polar form.

    λ = r·e^{iθ},  r = exp(−exp(ν)),  θ = exp(θ_log)
    c_t = λ ⊙ c_{t-1} + (p_re + i·p_im),   p = W x_t + b

It is the LRU's recurrence without the ``γ`` normalisation (the input weights carry the scale),
so it reuses :class:`rtrl.cells.lru.LRUCell` with ``normalise = False``. The paper writes the
state as the real pair ``(Re c, Im c)`` rotated and scaled by ``(r, θ)``: the same map.

Where the activation goes: the paper's *linear* RTU applies it to the output ``(Re c, Im c)``
and its *non-linear* RTU puts it inside the recurrence (``c_t = g(λ c_{t-1} + W x_t)`` per real
part). Ours keeps the recurrence complex-linear in both variants, so ``a = λ`` is one complex
number per unit, and :class:`rtrl.nn.RTU` applies the activation (or none) to the output.
"""

from __future__ import annotations

from rtrl.cells.lru import LRUCell


class RTUCell(LRUCell):
    """RTU recurrence; ``K = 2`` gates ``(re, im)``, ``J = 2`` parameters ``(ν, θ_log)``.

    Init: ``λ`` on the ring ``r_min ≤ |λ| ≤ r_max`` (uniform by area), phase uniform in
    ``[0, max_phase]``; input weights ~ N(0, 1/(2D)), bias 0 (the LRU cell's init).
    """

    normalise = False
