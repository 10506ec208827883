"""LARS (You, Gitman, Ginsburg 2017, "Large batch training of convolutional networks", §3), as
timm's ``Lars``: SGD with momentum whose step for each tensor ``x`` is scaled by the local rate

    trust = trust_coeff * ||x|| / (||g|| + wd ||x|| + eps)      (1 when either norm is 0)

applied to ``g + wd x`` before the momentum buffer. A group without weight decay (BN, biases) takes
the plain SGD step unless ``always_adapt``. Written here: torch has no LARS.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..errors import UserInputError

__all__ = ["Lars"]


class Lars(torch.optim.Optimizer):
    """LARS over SGD with momentum (Nesterov optional)."""

    def __init__(self, params: Iterable[Any], lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 nesterov: bool = False, trust_coeff: float = 0.001, eps: float = 1e-8,
                 always_adapt: bool = False) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or trust_coeff <= 0 or eps < 0:
            raise UserInputError(f"invalid LARS settings: lr={lr}, momentum={momentum}, weight_decay={weight_decay}, "
                             f"trust_coeff={trust_coeff}, eps={eps}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                                      trust_coeff=trust_coeff, eps=eps, always_adapt=always_adapt))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, momentum = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if wd != 0 or group["always_adapt"]:
                    w_norm, g_norm = p.norm(), grad.norm()
                    trust = group["trust_coeff"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                    trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    grad = (grad + wd * p) * trust
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad)
                    buf = state["momentum_buffer"]
                    grad = grad + momentum * buf if group["nesterov"] else buf
                p.add_(grad, alpha=-group["lr"])
        return loss
