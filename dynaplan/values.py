"""A terminal value for MPC: an ensemble of critics ``V(s)`` learned by TD from real data.

Planning over a short horizon is myopic (the source paper's diagnosis of its Hopper
plateau); with a value of the last predicted state the objective becomes
``Σ γ^k r̂_k + γ^H V(ŝ_H)`` for every planner, and the gradient planner differentiates
through ``V`` too. Each member learns TD(0) targets ``r + γ (1 − terminated) V̄(s')`` from its
own slowly moving target copy ``V̄`` (Polyak averaging) on its own bootstrap of the real
transitions; truncated episodes keep bootstrapping, terminated ones do not. With
``td_steps = n > 1`` the target is the truncated λ-return over the next ``n`` real steps of
the same episode, ``G^λ = (1 − λ) Σ_{k<n} λ^{k−1} G^(k) + λ^{n−1} G^(n)`` with the k-step
returns ``G^(k) = Σ_{i<k} γ^i r_{t+i} + γ^k V̄(s_{t+k})``; an episode that ends inside the
window keeps its last available ``G^(k)``. With a :class:`ModelExpansion` (model-based value
expansion, Feinberg et al. 2018) the target of a real transition continues from its real next
state through ``k`` imagined steps of the model under a policy before bootstrapping:
``r_t + γ (1 − d_t) (Σ_{i<k} γ^i r̂_i + γ^k V̄(ŝ_k))``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models import DynamicsModel
from dynaplan.models.ensemble import ACTIVATIONS, EnsembleLinear
from dynaplan.models.normalizer import Normalizer
from dynaplan.models.trainer import load_optimizer_state
from dynaplan.planners.objective import discounted_returns
from dynaplan.tasks import Task
from dynaplan.types import TransitionBatch


class ValueEnsemble(nn.Module):
    """``E`` critics in one batched MLP on normalised observations.

    Calling it gives the planning value ``[N]`` of ``obs: [N, S]``: the members' mean minus
    ``pessimism`` times their standard deviation (a penalty on states the critics disagree on).
    """

    def __init__(
        self,
        obs_dim: int,
        ensemble_size: int = 5,
        hidden_size: int = 256,
        num_layers: int = 2,
        activation: str = "silu",
        pessimism: float = 0.0,
    ) -> None:
        super().__init__()
        if ensemble_size <= 0 or hidden_size <= 0 or num_layers <= 0 or pessimism < 0:
            raise ConfigError("the value ensemble needs positive sizes and pessimism >= 0")
        sizes = [obs_dim] + [hidden_size] * num_layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(ensemble_size, n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)
        )
        self.head = EnsembleLinear(ensemble_size, hidden_size, 1)
        self.activation = ACTIVATIONS[activation]()
        self.obs_norm = Normalizer(obs_dim)
        self.ensemble_size, self.pessimism = ensemble_size, pessimism

    def members(self, obs: Tensor) -> Tensor:
        """Every member's value ``[E, N]`` of its own rows ``obs: [E, N, S]``."""
        x = self.obs_norm.normalize(obs)
        for layer in self.hidden:
            x = self.activation(layer(x))
        return self.head(x).squeeze(-1)

    def forward(self, obs: Tensor) -> Tensor:
        values = self.members(obs.expand(self.ensemble_size, *obs.shape))
        if self.ensemble_size == 1 or self.pessimism == 0:
            return values.mean(0)
        return values.mean(0) - self.pessimism * values.std(0)


@dataclass
class ModelExpansion:
    """``steps`` imagined steps of ``model`` acting by ``policy`` in every TD target."""

    model: DynamicsModel
    task: Task
    policy: Callable[[Tensor], Tensor]
    steps: int


class ValueTrainer:
    """TD(λ) over ``td_steps`` real steps (TD(0) by default) with Polyak-averaged targets."""

    def __init__(
        self,
        critic: ValueEnsemble,
        lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        td_steps: int = 1,
        td_lambda: float = 0.95,
        expansion: ModelExpansion | None = None,
    ) -> None:
        if lr <= 0 or not 0 < gamma < 1 or not 0 < tau <= 1:
            raise ConfigError(
                f"need lr > 0, gamma in (0, 1), tau in (0, 1]; got {lr}, {gamma}, {tau}"
            )
        if td_steps <= 0 or not 0 <= td_lambda <= 1:
            raise ConfigError(
                f"need td_steps > 0, td_lambda in [0, 1]; got {td_steps}, {td_lambda}"
            )
        self.critic, self.gamma, self.tau = critic, gamma, tau
        if expansion is not None and (expansion.steps <= 0 or td_steps > 1):
            raise ConfigError("model expansion needs steps > 0 and one real step (td_steps 1)")
        self.td_steps, self.td_lambda, self.expansion = td_steps, td_lambda, expansion
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.optimizer = torch.optim.Adam(critic.parameters(), lr=lr)

    def fit(
        self, buffer: ReplayBuffer, rng: np.random.Generator, updates: int, batch_size: int = 256
    ) -> float:
        """``updates`` TD steps on all of ``buffer``; returns the mean TD loss of the last 100."""
        if len(buffer) == 0:
            raise ConfigError("cannot train a value function on an empty buffer")
        device = next(self.critic.parameters()).device
        data = buffer.batch(np.arange(len(buffer)), device)
        # the episode ends after a row's transition: its episode terminated or was cut off
        ends = data.terminated | torch.as_tensor(buffer.truncated, device=device)
        episode = torch.as_tensor(buffer.episode, device=device)
        self.critic.obs_norm.fit(data.obs)
        self.target.obs_norm.load_state_dict(self.critic.obs_norm.state_dict())
        losses = []
        for step in range(updates):
            rows = torch.as_tensor(
                rng.integers(len(buffer), size=(self.critic.ensemble_size, batch_size)),
                device=device,
            )  # [E, b]: each member's own bootstrap sample
            with torch.no_grad():
                if self.expansion is None:
                    target = self.lambda_returns(data, ends, episode, rows)
                else:
                    target = self.expanded_returns(data, rows)
            loss = (self.critic.members(data.obs[rows]) - target).square().mean()
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"value training hit a non-finite loss at update {step}; lower value.lr"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            with torch.no_grad():
                for param, target_param in zip(
                    self.critic.parameters(), self.target.parameters(), strict=True
                ):
                    target_param.lerp_(param, self.tau)
            losses.append(loss.item())
        return float(np.mean(losses[-100:]))

    def lambda_returns(
        self, data: TransitionBatch, ends: Tensor, episode: Tensor, rows: Tensor
    ) -> Tensor:
        """The TD(λ) targets ``[E, b]`` of the buffer rows ``rows [E, b]`` (module docstring).

        ``data`` holds the whole buffer in order; ``ends [N]`` marks a row after which its
        episode stops, ``episode [N]`` the episode ids.
        """
        size, steps = len(episode), self.td_steps
        ahead = rows[..., None] + torch.arange(steps, device=rows.device)  # [E, b, n]
        inside = ahead < size
        ahead = ahead.clamp(max=size - 1)
        inside &= episode[ahead] == episode[rows][..., None]
        values = self.target.members(data.next_obs[ahead].flatten(1, 2)).view(ahead.shape)
        alive = (~data.terminated[ahead]).float()
        valid = torch.ones_like(rows, dtype=torch.bool)
        partial = torch.zeros(rows.shape, device=rows.device)
        returns: list[Tensor] = []
        for k in range(steps):  # k-step returns G^(k+1), kept at the last valid one
            valid = valid & inside[..., k]
            partial = partial + torch.where(valid, self.gamma**k * data.reward[ahead[..., k]], 0)
            bootstrapped = partial + self.gamma ** (k + 1) * alive[..., k] * values[..., k]
            returns.append(
                bootstrapped if k == 0 else torch.where(valid, bootstrapped, returns[-1])
            )
            valid = valid & ~ends[ahead[..., k]]
        lam = self.td_lambda
        weights = [(1 - lam) * lam**k for k in range(steps - 1)] + [lam ** (steps - 1)]
        return sum(w * g for w, g in zip(weights, returns, strict=True))

    def expanded_returns(self, data: TransitionBatch, rows: Tensor) -> Tensor:
        """The model-expanded targets ``[E, b]`` of the buffer rows ``rows [E, b]``."""
        members, batch = rows.shape
        expansion = self.expansion

        def target_values(obs: Tensor) -> Tensor:  # each member bootstraps its own rows
            return self.target.members(obs.view(members, batch, -1)).reshape(-1)

        imagined = discounted_returns(
            expansion.model,
            expansion.task,
            data.next_obs[rows].flatten(0, 1),
            lambda t, obs: expansion.policy(obs),
            expansion.steps,
            self.gamma,
            terminal_value=target_values,
        ).view(members, batch)
        return data.reward[rows] + self.gamma * (~data.terminated[rows]).float() * imagined

    def state_dict(self) -> dict:
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])
        load_optimizer_state(self.optimizer, state["optimizer"])
