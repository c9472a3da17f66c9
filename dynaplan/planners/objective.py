"""The planning objective: roll a learned model forward and sum discounted task rewards."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dynaplan.models import DynamicsModel
from dynaplan.tasks import Task
from dynaplan.types import Propagation

TerminalValue = Callable[[Tensor], Tensor]
"""``V(obs [N, S]) -> [N]``, added as ``γ^H V(ŝ_H)`` for rollouts still alive at the horizon."""


class ModelObjective:
    """``f(actions [B, H, A]) -> returns [B]`` from a fixed start observation.

    Each sequence is rolled out by ``particles`` particles (rows ``b * P + p``), and the
    return is their mean. Rewards stop accumulating after a predicted termination.

    Args:
        model: the learned dynamics.
        task: supplies the differentiable reward and the termination rule.
        start: ``[S]`` the current observation.
        gamma: discount factor.
        particles: rollouts per sequence (``P``); with ``TSINF`` a multiple of the elites.
        propagation: how particles use the ensemble members.
        terminal_value: optional value of the last predicted state.
        generator: randomness of the TS modes and probabilistic sampling.
    """

    def __init__(
        self,
        model: DynamicsModel,
        task: Task,
        start: Tensor,
        gamma: float = 1.0,
        particles: int = 1,
        propagation: Propagation = Propagation.EXPECTATION,
        terminal_value: TerminalValue | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if start.ndim != 1:
            raise ValueError(f"start must be one observation [S], got shape {tuple(start.shape)}")
        self.model, self.task, self.start = model, task, start
        self.gamma, self.particles, self.propagation = gamma, particles, propagation
        self.terminal_value = terminal_value
        self.generator = generator

    def __call__(self, actions: Tensor) -> Tensor:
        if actions.ndim != 3:
            raise ValueError(f"actions must be [B, H, A], got shape {tuple(actions.shape)}")
        num_sequences, horizon, _ = actions.shape
        rows = num_sequences * self.particles
        obs = self.start.expand(rows, -1)
        actions = actions.repeat_interleave(self.particles, dim=0)  # [B * P, H, A]
        alive = torch.ones(rows, device=actions.device)
        total = torch.zeros(rows, device=actions.device)
        for t in range(horizon):
            next_obs = self.model.step(obs, actions[:, t], self.propagation, self.generator)
            reward = self.task.reward(obs, actions[:, t], next_obs)
            total = total + (self.gamma**t) * alive * reward
            alive = alive * (~self.task.terminated(next_obs)).float()
            obs = next_obs
        if self.terminal_value is not None:
            total = total + (self.gamma**horizon) * alive * self.terminal_value(obs)
        return total.view(num_sequences, self.particles).mean(1)
