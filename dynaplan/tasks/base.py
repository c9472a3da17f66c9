"""The task interface: a differentiable reward surrogate and the env's exact termination rule.

Every function works on batches with any leading shape: ``obs: [..., S]``,
``act: [..., A]``, ``next_obs: [..., S]`` give a result of shape ``[...]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from dynaplan.errors import ConfigError

RewardFn = Callable[[Tensor, Tensor, Tensor], Tensor]
TerminationFn = Callable[[Tensor], Tensor]


class Task:
    """Reward and termination of one environment, as batched torch functions.

    Subclass it for a built-in task, or build one from plain functions with
    :meth:`Task.from_functions` for an environment of your own.
    """

    env_id: str = ""

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """Differentiable surrogate reward used by the planners, shape ``[...]``."""
        raise NotImplementedError

    def true_reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """The environment's own reward, where observations determine it, shape ``[...]``.

        Raises NotImplementedError where the observation does not carry what the env's
        reward needs (``has_true_reward`` is False then).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot compute the env's reward")

    @property
    def has_true_reward(self) -> bool:
        return type(self).true_reward is not Task.true_reward

    def terminated(self, next_obs: Tensor) -> Tensor:
        """The environment's exact termination rule, bool of shape ``[...]``.

        The default never terminates (e.g. HalfCheetah).
        """
        return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)

    termination_gradient = False
    """Whether rollouts give a predicted termination a gradient (:meth:`soft_continuation`)."""

    def continuation(self, next_obs: Tensor) -> Tensor:
        """``1 − terminated``, in ``next_obs``'s dtype ``[...]``: whether a rollout goes on past
        this step. A 0/1 mask: a plan that ends in a termination gets no gradient from it."""
        return (~self.terminated(next_obs)).to(next_obs.dtype)

    def soft_continuation(self, next_obs: Tensor) -> Tensor:
        """A differentiable stand-in for :meth:`continuation`, ``[...]`` in (0, 1); tasks that
        support :meth:`with_termination_gradient` define it."""
        raise NotImplementedError

    def with_termination_gradient(self, enabled: bool) -> Task:
        """This task with ``termination_gradient`` set: rollouts then pass the gradient of
        :meth:`soft_continuation` at a predicted termination, weighted by the value it loses
        (see ``discounted_returns``). Only tasks with healthy ranges support it."""
        if not enabled:
            return self
        raise ConfigError(
            f"{type(self).__name__} has no healthy ranges to give a termination a gradient; "
            "search.termination_gradient and policy.termination_gradient must be off"
        )

    @property
    def has_healthy_ranges(self) -> bool:
        """Whether :meth:`with_safety_margin` takes a positive margin."""
        return type(self).with_safety_margin is not Task.with_safety_margin

    def with_safety_margin(self, margin: float) -> Task:
        """This task with its healthy ranges pulled in by ``margin`` at every bound, in reward
        and termination alike: what a planner should aim for when the model is off by about
        ``margin`` near a bound. Only tasks with healthy ranges support a positive margin."""
        if margin == 0:
            return self
        raise ConfigError(
            f"{type(self).__name__} has no healthy ranges to pull in; "
            f"a safety margin (search.safety_margin, policy.safety_margin) must be 0, got {margin}"
        )

    def with_hard_health(self, enabled: bool) -> Task:
        """This task with its reward paying the healthy bonus exactly while healthy (as the env
        does) instead of through the soft indicator that keeps plans off the bounds; tasks
        without a healthy bonus are unchanged. Learners that see terminations as the end of
        their rollouts (the actor-critic) need no soft indicator to feel a fall."""
        return self

    def with_min_upright(self, min_upright: float | None) -> Task:
        """This task with the torso unhealthy, in reward and termination, once the vertical
        component of its up axis falls below ``min_upright`` (None: unchanged). Only tasks
        with a free torso support it."""
        if min_upright is None:
            return self
        raise ConfigError(
            f"{type(self).__name__} has no free torso to keep upright; "
            "an upright bound (search.min_upright, policy.min_upright, reset_below_upright) "
            f"must be None, got {min_upright}"
        )

    def equilibrium(self) -> tuple[Tensor, Tensor] | None:
        """``(obs* [S], act* [A])`` that a regulation task holds the system at, around which
        its reward is a concave quadratic (``dynaplan.lqr``); None (the default) for tasks
        without one, such as locomotion."""
        return None

    @classmethod
    def from_functions(
        cls,
        reward: RewardFn,
        terminated: TerminationFn | None = None,
        env_id: str = "",
    ) -> Task:
        """A task from a reward function and an optional termination function."""
        return _FunctionTask(reward, terminated, env_id)


class _FunctionTask(Task):
    def __init__(self, reward: RewardFn, terminated: TerminationFn | None, env_id: str) -> None:
        self._reward = reward
        self._terminated = terminated
        self.env_id = env_id

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        return self._reward(obs, act, next_obs)

    def terminated(self, next_obs: Tensor) -> Tensor:
        if self._terminated is None:
            return super().terminated(next_obs)
        return self._terminated(next_obs).to(torch.bool)
