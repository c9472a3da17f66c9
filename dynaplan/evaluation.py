"""Evaluating any agent on separate episodes."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from dynaplan.errors import ConfigError
from dynaplan.types import Agent

EVAL_SEED_OFFSET = 1_000_000
"""Evaluation episodes use seeds far from the training episodes'."""


def evaluation_seed(run_seed: int, round_: int) -> int:
    """First reset seed of evaluation round ``round_`` in a run seeded ``run_seed``.

    Each run seed gets its own block of EVAL_SEED_OFFSET seeds (100 per round), so
    different run seeds are evaluated from different start states, and the variants of
    one comparison that share a run seed are evaluated from the same ones.
    """
    return EVAL_SEED_OFFSET * (run_seed + 1) + 100 * round_


@dataclass
class EvalResult:
    returns: list[float]
    lengths: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def evaluate(agent: Agent, env: gym.Env, episodes: int, seed: int) -> EvalResult:
    """Run ``episodes`` episodes with seeds ``seed, seed + 1, ...``; no exploration noise."""
    if episodes <= 0:
        raise ConfigError(f"evaluation needs at least one episode, got {episodes}")
    returns, lengths = [], []
    low, high = env.action_space.low, env.action_space.high
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        agent.reset()
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(np.clip(agent.act(obs), low, high))
            total += float(reward)
            length += 1
            done = terminated or truncated
        returns.append(total)
        lengths.append(length)
    return EvalResult(returns, lengths)
