"""A terminal value for MPC: an ensemble of critics ``V(s)`` learned by TD from real data.

Planning over a short horizon is myopic (the source paper's diagnosis of its Hopper
plateau); with a value of the last predicted state the objective becomes
``Σ γ^k r̂_k + γ^H V(ŝ_H)`` for every planner, and the gradient planner differentiates
through ``V`` too. Each member learns TD(0) targets ``r + γ (1 − terminated) V̄(s')`` from its
own slowly moving target copy ``V̄`` (Polyak averaging) on its own bootstrap of the real
transitions; truncated episodes keep bootstrapping, terminated ones do not.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import torch
from torch import Tensor, nn

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models.ensemble import ACTIVATIONS, EnsembleLinear
from dynaplan.models.normalizer import Normalizer


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


class ValueTrainer:
    """TD(0) with a Polyak-averaged target copy of the ensemble."""

    def __init__(
        self, critic: ValueEnsemble, lr: float = 3e-4, gamma: float = 0.99, tau: float = 0.005
    ) -> None:
        if lr <= 0 or not 0 < gamma < 1 or not 0 < tau <= 1:
            raise ConfigError(
                f"need lr > 0, gamma in (0, 1), tau in (0, 1]; got {lr}, {gamma}, {tau}"
            )
        self.critic, self.gamma, self.tau = critic, gamma, tau
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
        self.critic.obs_norm.fit(data.obs)
        self.target.obs_norm.load_state_dict(self.critic.obs_norm.state_dict())
        alive = (~data.terminated).float()
        losses = []
        for step in range(updates):
            rows = torch.as_tensor(
                rng.integers(len(buffer), size=(self.critic.ensemble_size, batch_size)),
                device=device,
            )  # [E, b]: each member's own bootstrap sample
            with torch.no_grad():
                target = data.reward[rows] + self.gamma * alive[rows] * self.target.members(
                    data.next_obs[rows]
                )
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

    def state_dict(self) -> dict:
        return {"target": self.target.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])
