"""Making Gymnasium environments, and a toy environment with known dynamics for tests."""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from dynaplan.errors import ConfigError

POINT_MASS_ID = "dynaplan/PointMass-v0"


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make`` with a clear error for an unknown id or a continuous-action mismatch."""
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as exc:
        raise ConfigError(
            f"Gymnasium cannot make env {env_id!r} ({exc}); check the id and version, "
            "e.g. 'Hopper-v5', and that its package is installed"
        ) from exc
    if not isinstance(env.action_space, spaces.Box):
        env.close()
        raise ConfigError(
            f"{env_id} has a {type(env.action_space).__name__} action space; "
            "dynaplan plans continuous (Box) actions only"
        )
    return env


class PointMassEnv(gym.Env):
    """A point in the plane steered to the origin: ``p' = p + dt * a``.

    Observation ``p: [2]``, action ``a ∈ [-1, 1]^2``, reward ``-‖p'‖``; the episode
    terminates when the point leaves the box ``‖p‖∞ > 2.5`` and is truncated at 30 steps.
    Random actions score about -35, steering straight to the goal about -3.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    dt = 0.2
    bound = 2.5

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._position = np.zeros(2, np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._position = self.np_random.uniform(-1.5, 1.5, 2).astype(np.float32)
        return self._position.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._position = (self._position + self.dt * action).astype(np.float32)
        reward = -float(np.linalg.norm(self._position))
        terminated = bool(np.abs(self._position).max() > self.bound)
        return self._position.copy(), reward, terminated, False, {}


gym.register(POINT_MASS_ID, entry_point=PointMassEnv, max_episode_steps=30)
