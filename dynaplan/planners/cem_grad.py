"""CEM with gradient refinement of the elites (GradCEM, Bharadhwaj et al. 2020; CEM-GD)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynaplan.planners.base import PlannerBase, check_elites, sanitize_returns
from dynaplan.planners.gradient import gradient_ascent
from dynaplan.types import Objective


class CEMGradientPlanner(PlannerBase):
    """Each iteration: sample, pick elites, refine each elite by a few Adam steps.

    The Gaussian is refit to the refined elites; the plan is the best refined
    sequence seen.

    Args:
        population, num_elites, iterations, alpha, init_std: as in :class:`CEMPlanner`.
        grad_steps: Adam steps on the elites per iteration.
        lr: Adam step size in normalised action units.
    """

    def __init__(
        self,
        *args,
        population: int = 200,
        num_elites: int = 20,
        iterations: int = 3,
        alpha: float = 0.1,
        init_std: float = 0.5,
        grad_steps: int = 3,
        lr: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_elites(population, num_elites)
        self.population, self.num_elites = population, num_elites
        self.iterations, self.alpha, self.init_std = iterations, alpha, init_std
        self.grad_steps, self.lr = grad_steps, lr

    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        mean, std = start, torch.full_like(start, self.init_std)
        best, best_return = start, torch.full((), -torch.inf, device=start.device)
        for _ in range(self.iterations):
            with torch.no_grad():
                samples = (mean + std * self._normal(self.population)).clamp(-1, 1)
                samples[0] = mean
                self._seed(samples)
                returns = sanitize_returns(objective(samples))
                elites = samples[returns.topk(self.num_elites).indices]
            refined = gradient_ascent(objective, elites, self.grad_steps, self.lr)
            better = refined.best_return > best_return
            best = torch.where(better, refined.best, best)
            best_return = torch.where(better, refined.best_return, best_return)
            mean = self.alpha * mean + (1 - self.alpha) * refined.candidates.mean(0)
            std = self.alpha * std + (1 - self.alpha) * refined.candidates.std(0)
        return best
