"""The cross-entropy method (as in PETS, Chua et al. 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynaplan.planners.base import PlannerBase, check_elites, sanitize_returns
from dynaplan.types import Objective


class CEMPlanner(PlannerBase):
    """Refits a diagonal Gaussian to the elites; returns the final elite mean.

    Args:
        population: samples per iteration.
        num_elites: best samples the Gaussian is refit to.
        iterations: refits per plan.
        alpha: smoothing, ``new = alpha * old + (1 - alpha) * elite statistic``.
        init_std: initial standard deviation in normalised units (1 = half the range).
    """

    def __init__(
        self,
        *args,
        population: int = 500,
        num_elites: int = 50,
        iterations: int = 5,
        alpha: float = 0.1,
        init_std: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_elites(population, num_elites)
        self.population, self.num_elites = population, num_elites
        self.iterations, self.alpha, self.init_std = iterations, alpha, init_std

    @torch.inference_mode()
    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        mean, std = start, torch.full_like(start, self.init_std)
        for _ in range(self.iterations):
            samples = (mean + std * self._normal(self.population)).clamp(-1, 1)
            samples[0] = mean
            self._seed(samples)
            returns = sanitize_returns(objective(samples))
            elites = samples[returns.topk(self.num_elites).indices]
            mean = self.alpha * mean + (1 - self.alpha) * elites.mean(0)
            std = self.alpha * std + (1 - self.alpha) * elites.std(0)
        return mean
