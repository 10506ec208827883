"""LAMB (You et al. 2019, "Large batch optimization for deep learning", Algorithm 2), as timm's
``Lamb`` that the "ResNet strikes back" recipes train with.

Per parameter tensor ``x`` with gradient ``g`` at step ``t``::

    m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
    r = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd x
    x = x - lr * (||x|| / ||r||) * r       (ratio 1 when either norm is 0)

With timm's two additions: the gradients are first scaled so that their global norm is at most
``max_grad_norm`` (0 = off), and a group without weight decay (BN, biases) takes the plain Adam
step (ratio 1) unless ``always_adapt``.

Written here: torch has no LAMB; ``torch-optimizer`` has had no release since 2021; the maintained
``pytorch_optimizer`` (4.1) leaves out the second-moment bias correction of Algorithm 2, so its
update differs from the paper's and from timm's at the start of training.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from ..errors import UserInputError

__all__ = ["Lamb"]


class Lamb(torch.optim.Optimizer):
    """LAMB with bias correction, decoupled-in-the-ratio weight decay and global-norm clipping."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, max_grad_norm: float = 1.0,
                 always_adapt: bool = False) -> None:
        if lr < 0 or eps <= 0 or weight_decay < 0 or max_grad_norm < 0 or not all(0 <= b < 1 for b in betas):
            raise UserInputError(f"invalid LAMB settings: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}, max_grad_norm={max_grad_norm}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        always_adapt=always_adapt)
        super().__init__(params, defaults)

    @torch.no_grad()
    def _clip_scale(self) -> torch.Tensor | None:
        max_norm = self.defaults["max_grad_norm"]
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if max_norm <= 0 or not grads:
            return None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return (norm / max_norm).clamp_(min=1.0)  # divide the gradients by this (>= 1): no host sync

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clip = self._clip_scale()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            wd, eps, lr = group["weight_decay"], group["eps"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if clip is None else p.grad / clip
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"].item()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                update = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt_().add_(eps))
                if wd != 0:
                    update.add_(p, alpha=wd)
                if wd != 0 or group["always_adapt"]:
                    w_norm, u_norm = p.norm(), update.norm()
                    ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(ratio)
                p.add_(update, alpha=-lr)
        return loss
