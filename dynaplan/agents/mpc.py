"""The MPC agent: plan against the learned model, execute, replan."""

from __future__ import annotations

import time

import numpy as np
import torch

from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective
from dynaplan.planners.objective import TerminalValue
from dynaplan.policy import PolicyPrior, propose
from dynaplan.tasks import Task
from dynaplan.types import Planner, Precision, Propagation, as_tensor


class MPCAgent:
    """Acts by model predictive control with any planner.

    Args:
        model, task: the learned dynamics and the task's reward/termination.
        planner: optimises the action sequence; its warm start lives inside it.
        gamma, particles, propagation, terminal_value: the objective's settings.
        replan_every: execute this many planned actions between plans.
        compiled, precision: how rollouts run (see ``ModelObjective``).
        disagreement_penalty: penalise ensemble disagreement (see ``ModelObjective``).
        safety_margin: plan against the task's healthy ranges pulled in by this much
            (``Task.with_safety_margin``); ``task`` itself stays exact for learning.
        min_upright: plan as if a torso tilted past this (``Task.with_min_upright``).
        termination_gradient: plan with a predicted termination's cost in the gradient
            (``Task.with_termination_gradient``).
        policy: a policy prior whose plan through the model seeds each plan's candidates.
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
        precision: Precision = Precision.FP32,
        disagreement_penalty: float = 0.0,
        policy: PolicyPrior | None = None,
        safety_margin: float = 0.0,
        min_upright: float | None = None,
        termination_gradient: bool = False,
    ) -> None:
        self.model, self.task, self.planner = model, task, planner
        self.terminal_value, self.replan_every, self.policy = terminal_value, replan_every, policy
        # one objective for the agent's life: each plan copies the observation into its start,
        # so a planner's captured CUDA graph stays valid from plan to plan
        self.objective = ModelObjective(
            model,
            task.with_safety_margin(safety_margin)
            .with_min_upright(min_upright)
            .with_termination_gradient(termination_gradient),
            torch.zeros(model.obs_dim, device=planner.device),
            gamma=gamma,
            particles=particles,
            propagation=propagation,
            terminal_value=terminal_value,
            generator=planner.generator,
            compiled=compiled,
            precision=precision,
            disagreement_penalty=disagreement_penalty,
        )
        self.plan_seconds, self.plans = 0.0, 0
        self._plan: np.ndarray | None = None  # [H, A], on the host
        self._executed = 0

    def reset(self) -> None:
        self.planner.reset()
        self._plan, self._executed = None, 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action ``[A]`` for observation ``[S]``."""
        if self._plan is None or self._executed >= self.replan_every:
            start = time.perf_counter()
            self.objective.start.copy_(as_tensor(obs, self.planner.device))
            self.model.eval()
            proposal = (
                None
                if self.policy is None
                else propose(self.model, self.policy, self.objective.start, self.planner.horizon)
            )
            # one copy to the host per plan, inside the timing: GPU work is asynchronous
            plan = self.planner.plan(self.objective, max(self._executed, 1), proposal)
            self._plan = plan.detach().cpu().numpy()
            self._executed = 0
            self.plan_seconds += time.perf_counter() - start
            self.plans += 1
        action = self._plan[self._executed]
        self._executed += 1
        return action.copy()

    @property
    def ms_per_plan(self) -> float:
        return 1000 * self.plan_seconds / max(self.plans, 1)
