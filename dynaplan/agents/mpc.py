"""The MPC agent: plan against the learned model, execute, replan."""

from __future__ import annotations

import time

import numpy as np
import torch

from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective
from dynaplan.planners.objective import TerminalValue
from dynaplan.tasks import Task
from dynaplan.types import Planner, Propagation, as_tensor


class MPCAgent:
    """Acts by model predictive control with any planner.

    Args:
        model, task: the learned dynamics and the task's reward/termination.
        planner: optimises the action sequence; its warm start lives inside it.
        gamma, particles, propagation, terminal_value: the objective's settings.
        replan_every: execute this many planned actions between plans.
        compiled: roll out through ``torch.compile`` (see ``ModelObjective``).
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        planner: Planner,
        gamma: float = 1.0,
        particles: int = 1,
        propagation: Propagation = Propagation.EXPECTATION,
        terminal_value: TerminalValue | None = None,
        replan_every: int = 1,
        compiled: bool = False,
    ) -> None:
        self.model, self.task, self.planner = model, task, planner
        self.gamma, self.particles, self.propagation = gamma, particles, propagation
        self.terminal_value = terminal_value
        self.replan_every, self.compiled = replan_every, compiled
        self.plan_seconds, self.plans = 0.0, 0
        self._plan: torch.Tensor | None = None
        self._executed = 0

    def reset(self) -> None:
        self.planner.reset()
        self._plan, self._executed = None, 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action ``[A]`` for observation ``[S]``."""
        if self._plan is None or self._executed >= self.replan_every:
            start = time.perf_counter()
            objective = ModelObjective(
                self.model,
                self.task,
                as_tensor(obs, self.planner.device),
                gamma=self.gamma,
                particles=self.particles,
                propagation=self.propagation,
                terminal_value=self.terminal_value,
                generator=self.planner.generator,
                compiled=self.compiled,
            )
            self.model.eval()
            self._plan = self.planner.plan(objective, max(self._executed, 1))
            self._executed = 0
            self.plan_seconds += time.perf_counter() - start
            self.plans += 1
        action = self._plan[self._executed]
        self._executed += 1
        return action.detach().cpu().numpy()

    @property
    def ms_per_plan(self) -> float:
        return 1000 * self.plan_seconds / max(self.plans, 1)
