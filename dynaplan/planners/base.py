"""What every planner shares: bounds, normalised actions, warm start and the NaN rule.

Planners search in normalised action units ``u ∈ [-1, 1]`` and map to the env's
bounds with ``a = mid + half_range * u``, so step sizes and noise scales mean the
same for every environment.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from dynaplan.errors import ConfigError
from dynaplan.types import Objective


def sanitize_returns(returns: Tensor) -> Tensor:
    """NaN and ±inf returns become -inf, so they can never be chosen."""
    return torch.where(torch.isfinite(returns), returns, torch.full_like(returns, -torch.inf))


class PlannerBase:
    """Shared state of a planner; subclasses implement :meth:`_optimize`.

    Args:
        action_low, action_high: ``[A]`` bounds of the action space.
        horizon: ``H``, steps per planned sequence.
        seed: seeds the planner's own generator (same seed, same plans).
        device: where the search runs.
    """

    def __init__(
        self,
        action_low: np.ndarray | Tensor,
        action_high: np.ndarray | Tensor,
        horizon: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if horizon <= 0:
            raise ConfigError(f"the planning horizon must be positive, got {horizon}")
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        if low.ndim != 1 or low.shape != high.shape or not torch.all(low < high):
            raise ConfigError("action bounds must be 1-D, of equal shape, with low < high")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError("planners need finite action bounds")
        self.horizon, self.action_dim, self.device = horizon, low.numel(), torch.device(device)
        self._mid, self._half_range = (high + low) / 2, (high - low) / 2
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._previous: Tensor | None = None  # [H, A], normalised

    def reset(self) -> None:
        self._previous = None

    def plan(self, objective: Objective, steps_since_last_plan: int = 1) -> Tensor:
        """Best action sequence ``[H, A]`` in env units, warm-started from the last plan."""
        start = self._warm_start(steps_since_last_plan)
        normalized = self._optimize(lambda u: objective(self._to_env(u)), start)
        self._previous = normalized.detach().clamp(-1, 1)
        return self._to_env(self._previous)

    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        """Normalised ``[H, A]`` plan; ``objective`` takes normalised ``[B, H, A]``."""
        raise NotImplementedError

    def _to_env(self, normalized: Tensor) -> Tensor:
        return self._mid + self._half_range * normalized

    def _warm_start(self, shift: int) -> Tensor:
        """The previous plan shifted by ``shift`` steps, padded with zeros (mid-range)."""
        start = torch.zeros(self.horizon, self.action_dim, device=self.device)
        if self._previous is not None and shift < self.horizon:
            start[: self.horizon - shift] = self._previous[shift:]
        return start

    def _uniform(self, count: int) -> Tensor:
        """``count`` uniform normalised sequences ``[count, H, A]``."""
        shape = (count, self.horizon, self.action_dim)
        return torch.rand(shape, generator=self.generator, device=self.device) * 2 - 1

    def _normal(self, count: int) -> Tensor:
        shape = (count, self.horizon, self.action_dim)
        return torch.randn(shape, generator=self.generator, device=self.device)

    def state_dict(self) -> dict:
        return {"previous": self._previous, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self._previous = state["previous"]
        self.generator.set_state(state["generator"])
