"""A policy prior for MPC, trained through the learned model (SVG(H)-style analytic gradients).

The policy ``a = π(s)`` is a deterministic MLP. It learns by gradient ascent on
``Σ_{k<H} γ^k r̂_k + γ^H V(ŝ_H)`` of its own imagined rollouts from real states: the model,
the differentiable reward and the terminal value (when there is one) are all differentiable,
so the gradient flows through every predicted step into the policy's weights (as in SVG(H)
and Dreamer's analytic gradients). It serves twice: its rollout through the model seeds a
share of every planner's candidates (``propose``), and it can act alone without planning,
the cheap path on slow machines.

A short horizon that ends in a learned value can be exploited: on Hopper a refit now and then
learns to lean from the reset pose towards the edge of the healthy range, where the critic
is too optimistic, and falls a few steps past the horizon. The optional start-state check
(``check_horizon``) catches this in the model itself: it rolls the old and the new policy
out for a long horizon from the buffer's reset states, without the value, and undoes a refit
that lowers that return.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models import DynamicsModel
from dynaplan.models.ensemble import ACTIVATIONS
from dynaplan.models.normalizer import Normalizer
from dynaplan.models.trainer import load_optimizer_state
from dynaplan.planners.objective import TerminalValue, discounted_returns
from dynaplan.tasks import Task


class BoundedPolicy(nn.Module):
    """An MLP from observations ``[N, S]`` to ``outputs_per_action`` values per action
    dimension, and the box ``[low, high]`` its actions are squashed into: the shared body of
    the deterministic prior and of the actor-critic's Gaussian actor.

    Args:
        action_low, action_high: ``[A]`` bounds of the action space.
        hidden_size, num_layers: the MLP's width and depth.
    """

    outputs_per_action = 1

    def __init__(
        self,
        obs_dim: int,
        action_low: np.ndarray | Tensor,
        action_high: np.ndarray | Tensor,
        hidden_size: int = 256,
        num_layers: int = 2,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        if hidden_size <= 0 or num_layers <= 0:
            raise ConfigError(
                f"{type(self).__name__} needs a positive hidden_size and num_layers; got "
                f"{hidden_size}, {num_layers}"
            )
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        sizes = [obs_dim] + [hidden_size] * num_layers
        layers: list[nn.Module] = []
        for n_in, n_out in itertools.pairwise(sizes):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        out_size = self.outputs_per_action * low.numel()
        self.net = nn.Sequential(*layers, nn.Linear(hidden_size, out_size))
        self.register_buffer("mid", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)

    def squash(self, u: Tensor) -> Tensor:
        """``mid + half_range · tanh(u)``: ``[..., A]`` in env units."""
        return self.mid + self.half_range * torch.tanh(u)


class PolicyPrior(BoundedPolicy):
    """``π(obs [N, S]) -> actions [N, A]`` in env units, ``mid + half_range · tanh(MLP)``, on
    observations standardised with statistics fitted to the buffer (the arguments are
    :class:`BoundedPolicy`'s)."""

    def __init__(self, obs_dim: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(obs_dim, *args, **kwargs)
        self.obs_norm = Normalizer(obs_dim)

    def forward(self, obs: Tensor) -> Tensor:
        return self.squash(self.net(self.obs_norm.normalize(obs)))


def propose(model: DynamicsModel, policy: PolicyPrior, obs: Tensor, horizon: int) -> Tensor:
    """The policy's plan ``[H, A]`` from ``obs [S]``: its actions along the model's prediction."""
    actions = []
    with torch.no_grad():
        state = obs[None]
        for _ in range(horizon):
            actions.append(policy(state))
            state = model.step(state, actions[-1])
    return torch.cat(actions)


@dataclass
class PolicyFit:
    """What one ``PolicyTrainer.fit`` did."""

    imagined_return: float
    """Mean imagined return of the last 100 batches."""
    kept_previous: bool
    """The start-state check undid the refit: the policy is the one from before the call, or
    with ``check_against_best`` the best so far."""
    check_return: float = math.nan
    """The kept policy's start-state check return (NaN without the check)."""
    alpha: float = math.nan
    """An actor-critic's entropy weight after the fit (NaN for the deterministic prior)."""
    entropy: float = math.nan
    """An actor-critic's mean entropy estimate ``−log π`` over its last 100 updates."""


class PolicyTrainer:
    """Adam on the policy's imagined ``H``-step return from real start states.

    Only the policy's weights get gradients; the model and the value are held fixed. With
    ``check_horizon > 0`` a refit is undone (weights and optimizer state) when it lowers the
    policy's ``check_horizon``-step model return from the buffer's reset states, without the
    value, by more than ``check_tolerance`` of the previous return. With ``check_against_best``
    the bar is the better of the previous policy and the best policy the check has kept so far,
    both scored under the current model, and the better one is restored (with the previous
    optimizer state): a run of refits that each lose a little can drift at most the tolerance
    below the best, as the current model scores it.
    """

    def __init__(
        self,
        policy: PolicyPrior,
        model: DynamicsModel,
        task: Task,
        horizon: int,
        gamma: float = 0.99,
        lr: float = 3e-4,
        terminal_value: TerminalValue | None = None,
        max_grad_norm: float = 10.0,
        check_horizon: int = 0,
        check_tolerance: float = 0.05,
        check_against_best: bool = False,
    ) -> None:
        if horizon <= 0 or lr <= 0 or not 0 < gamma <= 1:
            raise ConfigError(
                f"need horizon > 0, lr > 0, gamma in (0, 1]; got {horizon}, {lr}, {gamma}"
            )
        if check_horizon < 0 or check_tolerance < 0:
            raise ConfigError(
                "policy check_horizon and check_tolerance cannot be negative; "
                f"got {check_horizon}, {check_tolerance}"
            )
        self.policy, self.model, self.task = policy, model, task
        self.horizon, self.gamma, self.terminal_value = horizon, gamma, terminal_value
        self.max_grad_norm = max_grad_norm
        self.check_horizon, self.check_tolerance = check_horizon, check_tolerance
        self.check_against_best = check_against_best
        self.best: dict[str, Tensor] | None = None
        """The weights of the best policy the check has kept (with ``check_against_best``)."""
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=lr)

    def imagined_returns(self, starts: Tensor) -> Tensor:
        """``[N]`` discounted returns of the policy's model rollouts from ``starts [N, S]``."""
        return discounted_returns(
            self.model,
            self.task,
            starts,
            lambda t, obs: self.policy(obs),
            self.horizon,
            self.gamma,
            terminal_value=self.terminal_value,
        )

    def start_state_return(self, starts: Tensor) -> float:
        """Mean undiscounted ``check_horizon``-step model return from ``starts [N, S]``, no V."""
        with torch.no_grad():
            returns = discounted_returns(
                self.model,
                self.task,
                starts,
                lambda t, obs: self.policy(obs),
                self.check_horizon,
                gamma=1.0,
            )
        return returns.mean().item()

    def fit(
        self, buffer: ReplayBuffer, rng: np.random.Generator, updates: int, batch_size: int = 256
    ) -> PolicyFit:
        """``updates`` ascent steps, then the start-state check (when ``check_horizon > 0``)."""
        if len(buffer) == 0:
            raise ConfigError("cannot train a policy prior on an empty buffer")
        device = self.policy.mid.device
        if self.check_horizon:
            starts = buffer.batch(buffer.episode_starts(), device).obs
            previous = copy.deepcopy((self.policy.state_dict(), self.optimizer.state_dict()))
            previous_return = self.start_state_return(starts)
            bar, fallback = previous_return, previous[0]
            if self.check_against_best:
                best_return = -math.inf
                if self.best is not None:
                    self.policy.load_state_dict(self.best)
                    best_return = self.start_state_return(starts)
                    self.policy.load_state_dict(previous[0])
                if best_return > previous_return:
                    bar, fallback = best_return, self.best
                else:  # the previous prior is the best the current model knows of
                    self.best = previous[0]
        imagined_return = self._ascend(buffer, rng, updates, batch_size)
        if not self.check_horizon:
            return PolicyFit(imagined_return, kept_previous=False)
        new_return = self.start_state_return(starts)
        kept_previous = new_return < bar - self.check_tolerance * abs(bar)
        if kept_previous:
            self.policy.load_state_dict(fallback)
            self.optimizer.load_state_dict(previous[1])
        if self.check_against_best and new_return >= bar:
            self.best = copy.deepcopy(self.policy.state_dict())
        kept_return = bar if kept_previous else new_return
        return PolicyFit(imagined_return, kept_previous, check_return=kept_return)

    def _ascend(
        self, buffer: ReplayBuffer, rng: np.random.Generator, updates: int, batch_size: int
    ) -> float:
        device = self.policy.mid.device
        observations = buffer.batch(np.arange(len(buffer)), device).obs
        self.policy.obs_norm.fit(observations)
        parameters = list(self.policy.parameters())
        returns = []
        for step in range(updates):
            starts = observations[torch.as_tensor(rng.integers(len(buffer), size=batch_size))]
            objective = self.imagined_returns(starts).mean()
            if not torch.isfinite(objective):
                raise TrainingDivergedError(
                    f"policy prior training hit a non-finite return at update {step}; "
                    "lower policy.lr or policy.horizon"
                )
            # only d objective / d policy: the model and the critics stay as they are
            grads = torch.autograd.grad(-objective, parameters)
            for parameter, grad in zip(parameters, grads, strict=True):
                parameter.grad = grad
            nn.utils.clip_grad_norm_(parameters, self.max_grad_norm)
            self.optimizer.step()
            returns.append(objective.item())
        return float(np.mean(returns[-100:]))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])
        self.best = state.get("best")  # checkpoints from before check_against_best lack it


class PolicyAgent:
    """Acts with the policy prior alone, without planning (``dynaplan evaluate --no-plan``).

    With ``explore`` a policy that can ``sample`` (a stochastic actor) acts with its samples,
    as it does when it collects data; otherwise with its deterministic action.
    """

    def __init__(self, policy: nn.Module, explore: bool = False) -> None:
        self.policy = policy
        self.explore = explore and hasattr(policy, "sample")

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        state = torch.as_tensor(obs, dtype=torch.float32, device=self.policy.mid.device)
        with torch.no_grad():
            if self.explore:
                return self.policy.sample(state[None])[0][0].cpu().numpy()
            return self.policy(state[None])[0].cpu().numpy()
