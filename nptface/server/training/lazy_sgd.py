"""SGD that writes only the proxy rows a step touched, yet follows dense SGD's trajectory exactly.

The streamed NPT head's gradient reaches B·(k+1) of the C proxy rows (sparse COO, see
:class:`~nptface.core.heads.ScalableNPTHead`), but dense SGD with momentum and weight decay still
moves every row: an untouched row (gradient 0) takes ``d = λ·w``, ``b ← μ·b + d``, and
``w ← w − η·(d + μ·b)`` (Nesterov) or ``w ← w − η·b``. That step is linear in the row's
``(w, b)`` with scalar coefficients, so each step ``t`` is one 2×2 matrix for all untouched rows:

    Nesterov:  M_t = [[1 − η_t·λ·(1 + μ), −η_t·μ²], [λ, μ]]
    plain:     M_t = [[1 − η_t·λ,         −η_t·μ ], [λ, μ]]

and a row untouched over steps ``s .. t−1`` is ``(w, b)_t = M_{t−1}···M_s · (w, b)_s``. For a
constant rate this is the closed form ``M^n`` (momentum decays as μⁿ, the weight shrinks by
weight decay and by the still-running momentum); with a schedule the rate changes between steps,
so no single power serves, and :class:`LazyRowSGD` instead keeps, per parameter, the product of
the matrices since every step (``[steps + 1, 2, 2]`` in float64, one matrix multiply per step).
A row is caught up with its product when it is next touched, then takes the ordinary SGD step on
its gradient; the head calls :meth:`~LazyRowSGD.catch_up_rows` on its selected rows before it
reads them with autograd, so their cosines and gradients are computed at dense SGD's values.

What is exact and what is not. A row's weight and momentum, whenever caught up, are dense SGD's
for the gradients it received (up to rounding: the product is applied in one go instead of n
rounded steps; with momentum 0 and weight decay 0 the touched rows are bit-for-bit dense SGD's).
The one approximation is in the top-k *search*, which streams all C rows as last written: weight
decay only rescales a row, which no cosine sees, so without momentum the search, and hence the
whole run, is dense SGD's (up to rounding and ties); with momentum a row keeps drifting for a
few 1/(1 − μ) steps after its last gradient, by ``−η·μ²·b`` per step (Nesterov) and geometrically
less each step, and the search ranks it without that drift until it is selected. Partial FC's
sparse update is coarser: it freezes the weight *and* the momentum of rows outside the sample.

:meth:`LazyRowSGD.catch_up` brings every row up to date (one dense pass) and forgets the products;
the trainer calls it before checkpoints, evaluation and the final export, and
:meth:`~LazyRowSGD.state_dict` calls it too, so saved state has exactly dense SGD's layout
(``momentum_buffer`` per parameter): a checkpoint resumes under either optimiser and on sharded ranks.
Dense gradients (the backbone, or proxies from a dense head) take torch's own SGD step unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim.sgd import sgd

CATCH_UP_ROWS = 65536


def untouched_step_matrix(lr: float, weight_decay: float, momentum: float, nesterov: bool) -> torch.Tensor:
    """The 2×2 map ``(w, b) -> (w, b)`` of one SGD step on a row whose gradient is zero (float64)."""
    decay = weight_decay
    if nesterov:
        top = [1.0 - lr * decay * (1.0 + momentum), -lr * momentum * momentum]
    else:
        top = [1.0 - lr * decay, -lr * momentum]
    return torch.tensor([top, [decay, momentum]], dtype=torch.float64)


class _RowClock:
    """Which step each row of one parameter is current as of, and the catch-up product per step."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.steps = 0  # sparse steps taken since the last full catch-up
        self.row_step = torch.zeros(rows, dtype=torch.long, device=device)
        # products[s] = M_{steps-1} ··· M_s: what a row current as of step s still owes.
        self.products = torch.eye(2, dtype=torch.float64, device=device)[None].clone()

    def advance(self, matrix: torch.Tensor, touched: torch.Tensor) -> None:
        """One step done: rows in ``touched`` are current, every other row owes ``matrix`` more."""
        identity = torch.eye(2, dtype=torch.float64, device=self.products.device)[None]
        self.products = torch.cat([matrix.to(self.products.device) @ self.products, identity])
        self.steps += 1
        self.row_step[touched] = self.steps


class LazyRowSGD(torch.optim.SGD):
    """``torch.optim.SGD`` (dampening 0) that updates a parameter row-sparsely when its gradient is sparse COO.

    A parameter whose gradient arrives as a sparse COO tensor (rows along dim 0) is updated on
    the gradient's rows only, with the untouched rows' momentum and weight decay applied lazily
    and exactly (module docstring). Call :meth:`catch_up` before reading such a parameter or its
    momentum from outside (checkpoints, evaluation, export).
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0.0, nesterov: bool = False, **kwargs: Any) -> None:
        if kwargs.get("dampening", 0.0) or kwargs.get("maximize", False):
            raise ValueError("LazyRowSGD supports dampening = 0 and maximize = False only")
        super().__init__(params, lr=lr, momentum=momentum, nesterov=nesterov, **kwargs)
        self._clocks: dict[torch.Tensor, _RowClock] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    self._sparse_step(p, group)
                    continue
                self._catch_up_param(p)  # a dense gradient on a lazily updated parameter: bring it current first
                params.append(p)
                grads.append(p.grad)
                if group["momentum"] != 0:
                    buffers.append(self.state[p].get("momentum_buffer"))
            if not params:
                continue
            sgd(
                params,
                grads,
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["nesterov"],
                maximize=False,
                foreach=group["foreach"],
                fused=group["fused"],
            )
            if group["momentum"] != 0:
                for p, buffer in zip(params, buffers, strict=True):
                    self.state[p]["momentum_buffer"] = buffer
        return loss

    def _sparse_step(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        lr, decay, momentum, nesterov = group["lr"], group["weight_decay"], group["momentum"], group["nesterov"]
        grad = p.grad.coalesce()
        rows, row_grads = grad.indices()[0], grad.values()
        clock = self._clocks.get(p)
        if clock is None:
            clock = self._clocks[p] = _RowClock(p.shape[0], p.device)
        buffer = self.state[p].get("momentum_buffer")
        if buffer is None and momentum != 0:
            buffer = self.state[p]["momentum_buffer"] = torch.zeros_like(p)
        weights = p[rows]
        velocity = buffer[rows] if buffer is not None else torch.zeros_like(weights)
        owed = clock.products[clock.row_step[rows]].to(p.dtype)
        weights, velocity = _apply(owed, weights, velocity)
        # torch's SGD step, on these rows only (the same operations, so the same rounding).
        update = row_grads.add(weights, alpha=decay) if decay != 0 else row_grads
        if momentum != 0:
            velocity.mul_(momentum).add_(update)
            update = update.add(velocity, alpha=momentum) if nesterov else velocity
            buffer[rows] = velocity
        p[rows] = weights.add_(update, alpha=-lr)
        clock.advance(untouched_step_matrix(lr, decay, momentum, nesterov), rows)

    @torch.no_grad()
    def catch_up_rows(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Bring rows ``rows`` of ``p`` up to date before a forward reads them (cosines, gradients at dense values)."""
        clock = self._clocks.get(p)
        if clock is None:
            return
        rows = rows.flatten().unique()
        buffer = self.state[p].get("momentum_buffer")
        velocity = buffer[rows] if buffer is not None else torch.zeros_like(p[rows])
        weights, velocity = _apply(clock.products[clock.row_step[rows]].to(p.dtype), p[rows], velocity)
        p[rows] = weights
        if buffer is not None:
            buffer[rows] = velocity
        clock.row_step[rows] = clock.steps

    @torch.no_grad()
    def catch_up(self) -> None:
        """Bring every lazily updated row up to date (dense SGD's values now) and reset the bookkeeping."""
        for p in list(self._clocks):
            self._catch_up_param(p)

    def _catch_up_param(self, p: torch.Tensor) -> None:
        clock = self._clocks.pop(p, None)
        if clock is None or clock.steps == 0:
            return
        buffer = self.state[p].get("momentum_buffer")
        weights = p.detach()
        for start in range(0, len(weights), CATCH_UP_ROWS):  # in slices: a few [C, d] temporaries would double the peak
            rows = slice(start, start + CATCH_UP_ROWS)
            owed = clock.products[clock.row_step[rows]].to(p.dtype)
            velocity = buffer[rows] if buffer is not None else torch.zeros_like(weights[rows])
            new_weights, new_velocity = _apply(owed, weights[rows], velocity)
            weights[rows] = new_weights
            if buffer is not None:
                buffer[rows] = new_velocity

    def state_dict(self) -> dict[str, Any]:
        """Dense SGD's state dict, taken after :meth:`catch_up` (so every row's momentum is current)."""
        self.catch_up()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._clocks.clear()
        super().load_state_dict(state_dict)


def _apply(owed: torch.Tensor, weights: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b) <- owed @ (w, b)`` row by row: ``owed`` is ``[rows, 2, 2]``, ``w`` and ``b`` ``[rows, d]``."""
    shape = (-1,) + (1,) * (weights.ndim - 1)
    new_weights = owed[:, 0, 0].view(shape) * weights + owed[:, 0, 1].view(shape) * velocity
    new_velocity = owed[:, 1, 0].view(shape) * weights + owed[:, 1, 1].view(shape) * velocity
    return new_weights, new_velocity
