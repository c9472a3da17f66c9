"""The task of the toy :class:`dynaplan.envs.PointMassEnv`: exact reward and termination."""

from __future__ import annotations

from torch import Tensor

from dynaplan.envs import POINT_MASS_ID, PointMassEnv
from dynaplan.tasks.base import Task
from dynaplan.tasks.registry import register


class PointMassTask(Task):
    """``r = -‖p'‖``; terminates outside the box ``‖p'‖∞ > bound``."""

    env_id = POINT_MASS_ID

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        return -next_obs.norm(dim=-1)

    def true_reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        return self.reward(obs, act, next_obs)

    def terminated(self, next_obs: Tensor) -> Tensor:
        return next_obs.abs().amax(-1) > PointMassEnv.bound


register(POINT_MASS_ID, PointMassTask())
