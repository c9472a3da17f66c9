"""Random shooting (Nagabandi et al. 2018): the best of N uniform sequences."""

from __future__ import annotations

import torch
from torch import Tensor

from dynaplan.planners.base import PlannerBase, sanitize_returns
from dynaplan.types import Objective


class RandomShootingPlanner(PlannerBase):
    """Evaluates ``num_samples`` uniform sequences plus the warm start; keeps the best."""

    def __init__(self, *args, num_samples: int = 1000, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_samples = num_samples

    @torch.inference_mode()
    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        samples = self._uniform(self.num_samples)
        samples[0] = start
        self._seed(samples)
        returns = sanitize_returns(objective(samples))
        return samples.index_select(0, returns.argmax()[None])[0]  # no host read of the index
