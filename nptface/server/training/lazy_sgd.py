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
its gradient. The head never sees a stale row: its top-k search reads every row through
:meth:`~LazyRowSGD.lazy_rows` (:meth:`~LazyRowSGD.current_rows` applies the products to each
chunk on the fly, writing nothing: one extra read of the momentum and a multiply-add per element),
and the selected rows are caught up in place (:meth:`~LazyRowSGD.catch_up_rows`) before autograd
reads them, so cosines, selection and gradients are dense SGD's.

What is exact. Nothing is approximated: the run is dense SGD's up to floating-point rounding (the
product is applied in one go instead of n rounded steps, about 1e-7 relative) and what rounding
does to near-ties in the top-k; with momentum 0 and weight decay 0 the written rows are
bit-for-bit dense SGD's. Partial FC's sparse update, by contrast, is an approximation: it freezes
the weight and the momentum of every row outside the sample.

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

    def lazy_rows(self, p: torch.Tensor) -> _CurrentRows:
        """``p`` as the streamed head reads it (:class:`~nptface.core.scalable_npt.LazyRows`): rows as they are now."""
        return _CurrentRows(self, p)

    @torch.no_grad()
    def current_rows(self, p: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """``p[rows]`` as dense SGD has it now, computed on the fly (nothing written; may be a view of ``p``)."""
        weights = p.detach()[rows]
        clock = self._clocks.get(p)
        if clock is None:
            return weights
        owed = clock.products[clock.row_step[rows]].to(p.dtype)
        shape = (*owed.shape[:-2],) + (1,) * (weights.ndim - owed.ndim + 2)
        current = owed[..., 0, 0].reshape(shape) * weights
        buffer = self.state[p].get("momentum_buffer")
        if buffer is not None:  # in place, one pass: the search reads every row through here each step
            current.addcmul_(owed[..., 0, 1].reshape(shape), buffer[rows])
        return current

    @torch.no_grad()
    def catch_up_rows(self, p: torch.Tensor, rows: torch.Tensor) -> None:
        """Bring rows ``rows`` of ``p`` up to date before a forward reads them (cosines, gradients at dense values)."""
        clock = self._clocks.get(p)
        if clock is None:
            return
        # Repeated rows are computed from the same values, so every write of a row writes the same
        # bits: no unique(), whose data-dependent shape would break a compiled train step.
        rows = rows.flatten()
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


class _CurrentRows:
    """A lazily updated parameter, read as it is now: what :class:`LazyRowSGD.lazy_rows` hands the head."""

    def __init__(self, optimizer: LazyRowSGD, p: torch.Tensor) -> None:
        self.optimizer, self.p = optimizer, p

    def read(self, rows: slice | torch.Tensor) -> torch.Tensor:
        return self.optimizer.current_rows(self.p, rows)

    def refresh(self, rows: torch.Tensor) -> None:
        self.optimizer.catch_up_rows(self.p, rows)


def _apply(owed: torch.Tensor, weights: torch.Tensor, velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w, b) <- owed @ (w, b)`` row by row: ``owed`` is ``[rows, 2, 2]``, ``w`` and ``b`` ``[rows, d]``."""
    shape = (-1,) + (1,) * (weights.ndim - 1)
    new_weights = owed[:, 0, 0].view(shape) * weights + owed[:, 0, 1].view(shape) * velocity
    new_velocity = owed[:, 1, 0].view(shape) * weights + owed[:, 1, 1].view(shape) * velocity
    return new_weights, new_velocity
