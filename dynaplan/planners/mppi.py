"""Model predictive path integral control (Williams et al. 2017)."""

from __future__ import annotations

import torch
from torch import Tensor

from dynaplan.planners.base import PlannerBase, sanitize_returns
from dynaplan.types import Objective


class MPPIPlanner(PlannerBase):
    """Moves the plan to the ``exp(return / temperature)``-weighted mean of noisy samples.

    Args:
        num_samples: noisy sequences per iteration.
        iterations: reweightings per plan.
        noise_std: sampling noise in normalised units.
        temperature: ``λ``; smaller is greedier (in units of return).
    """

    def __init__(
        self,
        *args,
        num_samples: int = 500,
        iterations: int = 3,
        noise_std: float = 0.3,
        temperature: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples, self.iterations = num_samples, iterations
        self.noise_std, self.temperature = noise_std, temperature

    @torch.inference_mode()
    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        mean = start
        for _ in range(self.iterations):
            samples = (mean + self.noise_std * self._normal(self.num_samples)).clamp(-1, 1)
            samples[0] = mean
            self._seed(samples)
            returns = sanitize_returns(objective(samples))
            weights = torch.softmax(returns / self.temperature, dim=0)  # -inf -> weight 0
            # all returns -inf: nothing to learn from, keep the current plan (no host sync)
            mean = torch.where(
                torch.isfinite(returns).any(), torch.einsum("b,bha->ha", weights, samples), mean
            )
        return mean
