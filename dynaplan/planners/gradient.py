"""Gradient-based action optimisation: Adam through the model and the reward.

The method dynaplan is built around (and the source paper's): ``K`` candidate
sequences are optimised in parallel (restarts), each step projected back into the
bounds, and the best sequence seen by predicted return is executed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from dynaplan.planners.base import PlannerBase, sanitize_returns
from dynaplan.types import Objective


class AscentResult(NamedTuple):
    best: Tensor  # [H, A], the best sequence evaluated at any step
    best_return: Tensor  # [], its predicted return
    candidates: Tensor  # [K, H, A], the candidates after the last step


def gradient_ascent(
    objective: Objective, candidates: Tensor, steps: int, lr: float
) -> AscentResult:
    """Adam ascent of ``objective`` on normalised ``candidates: [K, H, A]``, kept in [-1, 1].

    A candidate whose return is not finite gets no gradient and is never chosen. Nothing
    here waits for the device, so a whole ascent can be captured as a CUDA graph.
    """
    candidates = candidates.detach().clone().requires_grad_(True)
    capturing = candidates.is_cuda and torch.cuda.is_current_stream_capturing()
    optimizer = torch.optim.Adam([candidates], lr=lr, capturable=capturing)
    best = candidates.detach()[0].clone()
    best_return = torch.full((), -torch.inf, device=candidates.device)
    for step in range(steps + 1):
        returns = sanitize_returns(objective(candidates))
        top_return, top = returns.detach().max(0)
        better = top_return > best_return
        # index_select, not [top]: indexing by a 0-dim tensor reads it on the host
        best = torch.where(better, candidates.detach().index_select(0, top[None])[0], best)
        best_return = torch.where(better, top_return, best_return)
        if step == steps:
            break
        finite = torch.isfinite(returns)
        loss = -torch.where(finite, returns, torch.zeros_like(returns)).sum()
        # only d loss / d candidates: no weight gradients for the model or critics
        (grad,) = torch.autograd.grad(loss, candidates)
        candidates.grad = grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        optimizer.step()
        with torch.no_grad():
            candidates.clamp_(-1, 1)
    return AscentResult(best, best_return, candidates.detach())


class GradientPlanner(PlannerBase):
    """Adam on ``num_candidates`` sequences in parallel, seeded around the warm start.

    Candidate 0 is the warm start (the previous plan, shifted); the next ``warm_share``
    of the candidates are the warm start plus Gaussian noise (``warm_noise``); the rest
    are uniform random restarts, except the last ``proposal_share`` when ``plan`` gets a
    proposal (see ``PlannerBase``).

    Args:
        num_candidates: ``K`` sequences optimised in parallel.
        iterations: Adam steps per plan.
        lr: Adam step size in normalised action units.
        warm_share: share of the candidates drawn around the warm start.
        warm_noise: std of those draws in normalised units.
    """

    def __init__(
        self,
        *args,
        num_candidates: int = 16,
        iterations: int = 10,
        lr: float = 0.1,
        warm_share: float = 0.5,
        warm_noise: float = 0.3,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_candidates, self.iterations, self.lr = num_candidates, iterations, lr
        self.warm_share, self.warm_noise = warm_share, warm_noise

    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        candidates = self._uniform(self.num_candidates)
        num_warm = max(1, int(self.warm_share * self.num_candidates))
        noise = self.warm_noise * self._normal(num_warm)
        noise[0] = 0.0
        candidates[:num_warm] = (start + noise).clamp(-1, 1)
        self._seed(candidates)
        return gradient_ascent(objective, candidates, self.iterations, self.lr).best
