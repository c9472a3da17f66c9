"""A soft actor-critic learned on model rollouts (SAC-SVG(H) with distribution rollouts).

The policy prior of :mod:`dynaplan.policy` is deterministic and ends its imagined rollouts in
a state value ``V(s)`` fitted to the data's mixed policies; its refits can collapse. This
learner is the recipe of SAC-SVG(H) (Amos et al. 2021) and DHMBPO (Kubo et al. 2025):

- a stochastic, tanh-squashed Gaussian actor with a learned entropy weight ``α`` (SAC);
- an ensemble of ``Q(s, a)`` critics with Polyak targets, its output scaled to and its
  targets clipped into the returns that the rewards seen so far allow;
- *distribution rollouts*: every ``rollout_every`` updates, ``batch_size`` real states are
  rolled out ``rollout_horizon`` steps under the actor through the model (one random member
  per row and step, TS1) and the states reached fill a buffer of start states, so the actor
  learns where its own policy goes, not only where the data went;
- *training rollouts*: each update rolls ``horizon`` (about 5) steps out from those start
  states with reparameterised actions; the actor ascends the entropy-regularised return
  ``Σ_{t<H} γ^t (r_t − α log π_t) + γ^H (Q(s_H, a_H) − α log π_H)`` by gradients through the
  model, the task's differentiable reward and the critic (SVG(H)); the critics regress on the
  same rollout's ``H``-step target (model-based value expansion) with the target critics'
  minimum at its end.

It serves the MPC agent twice, like the deterministic prior: its mean action seeds the
planner's candidates and acts alone (``--no-plan``), and :class:`SoftValue` is the planner's
terminal value. Rewards and terminations come from the env's task, as for every planner.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models import DynamicsModel
from dynaplan.models.ensemble import ACTIVATIONS, EnsembleLinear
from dynaplan.models.normalizer import Normalizer
from dynaplan.models.trainer import load_optimizer_state
from dynaplan.policy import BoundedPolicy, PolicyFit
from dynaplan.tasks import Task
from dynaplan.types import Propagation

LOG_STD_BOUNDS = (-5.0, 2.0)
"""Soft bounds of the actor's log standard deviation (before the tanh squashing)."""


class GaussianActor(BoundedPolicy):
    """A tanh-squashed Gaussian policy over ``[low, high]`` actions, on raw observations.

    Calling it gives the deterministic action ``mid + half_range · tanh(μ(s))`` ``[N, A]``
    for ``obs [N, S]``, so it stands wherever the deterministic prior does (planner
    proposals, acting alone); :meth:`sample` draws reparameterised actions with their
    log-densities for learning and exploration.
    """

    outputs_per_action = 2  # the mean and the raw log-std of each action dimension

    def __init__(
        self, obs_dim: int, *args: Any, normalize_obs: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(obs_dim, *args, **kwargs)
        self.obs_norm = Normalizer(obs_dim) if normalize_obs else None
        """Standardises observations with the buffer's statistics (refitted at each fit)."""

    def _gaussian(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        if self.obs_norm is not None:
            obs = self.obs_norm.normalize(obs)
        mean, raw_log_std = self.net(obs).chunk(2, dim=-1)
        low, high = LOG_STD_BOUNDS
        return mean, low + 0.5 * (high - low) * (torch.tanh(raw_log_std) + 1)

    def forward(self, obs: Tensor) -> Tensor:
        mean, _ = self._gaussian(obs)
        return self.squash(mean)

    def sample(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised ``(actions [N, A], log π [N])``; the density is that of the squashed
        action in ``[-1, 1]^A`` (the scale to the env's bounds adds a constant, left out as in
        SAC, so the entropy target ``−A`` means the same for every action range)."""
        mean, log_std = self._gaussian(obs)
        u = mean + log_std.exp() * torch.randn_like(mean)
        gaussian = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
        # log(1 - tanh(u)^2), written stably
        squash = 2 * (math.log(2) - u - F.softplus(-2 * u))
        log_prob = (gaussian - squash).sum(-1)
        return self.squash(u), log_prob


class QEnsemble(nn.Module):
    """``E`` critics ``Q(s, a)`` in one batched MLP, their outputs scaled to a return range.

    Each member's raw output ``y`` reads as ``center + width · y``, with ``center`` and ``width``
    the midpoint and half-width of ``[q_low, q_high]`` (buffers the trainer moves with the
    rewards it sees), so the network works near unit scale on every task.

    Args:
        normalize_obs: standardise observations with the buffer's statistics.
        layer_norm: DHMBPO's critic: a LayerNorm (without affine) before every layer after
            the first, the head included, and a zero-initialised head (every member starts
            at the middle of the range).
        dropout: dropout rate after each hidden layer while the critics learn
            (``members(..., dropout=True)``).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 2,
        hidden_size: int = 256,
        num_layers: int = 2,
        activation: str = "silu",
        normalize_obs: bool = False,
        layer_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(ensemble_size, hidden_size, num_layers) <= 0 or not 0 <= dropout < 1:
            raise ConfigError("the critic ensemble needs positive sizes and dropout in [0, 1)")
        sizes = [obs_dim + act_dim] + [hidden_size] * num_layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(ensemble_size, n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)
        )
        self.head = EnsembleLinear(ensemble_size, hidden_size, 1)
        self.layer_norm, self.dropout = layer_norm, dropout
        if layer_norm:
            with torch.no_grad():
                self.head.weight.zero_()
                self.head.bias.zero_()
        self.obs_norm = Normalizer(obs_dim) if normalize_obs else None
        self.activation = ACTIVATIONS[activation]()
        self.ensemble_size = ensemble_size
        self.register_buffer("q_low", torch.tensor(-1.0))
        self.register_buffer("q_high", torch.tensor(1.0))

    def members(self, obs: Tensor, action: Tensor, dropout: bool = False) -> Tensor:
        """Every member's ``Q`` ``[E, N]`` of ``obs [N, S]``, ``action [N, A]``; with
        ``dropout`` the hidden layers drop units at the critic's rate."""
        if self.obs_norm is not None:
            obs = self.obs_norm.normalize(obs)
        x = torch.cat([obs, action], dim=-1).expand(self.ensemble_size, -1, -1)
        for i, layer in enumerate(self.hidden):
            x = layer(self._normed(x) if i else x)
            if dropout and self.dropout:
                x = F.dropout(x, self.dropout)
            x = self.activation(x)
        center, width = (self.q_high + self.q_low) / 2, (self.q_high - self.q_low) / 2
        return center + width * self.head(self._normed(x)).squeeze(-1)

    def _normed(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-1:], eps=1e-5) if self.layer_norm else x

    def clipped(self, values: Tensor) -> Tensor:
        """``values`` clipped into ``[q_low, q_high]``."""
        return torch.minimum(torch.maximum(values, self.q_low), self.q_high)

    def pessimistic(self, values: Tensor) -> Tensor:
        """``[N]`` minimum over two members of ``values [E, N]``, a random pair per call when
        there are more than two (randomised ensembled double Q-learning, Chen et al. 2021)."""
        if self.ensemble_size > 2:
            values = values[torch.randperm(self.ensemble_size, device=values.device)[:2]]
        return values.min(0).values


class SoftValue(nn.Module):
    """The planner's terminal value ``V(s) = mean_i Q_i(s, π̄(s))`` ``[N]`` of ``obs [N, S]``,
    ``π̄`` the actor's deterministic action. Its state is the critic's; the actor is held by
    reference (its weights are saved as the policy)."""

    def __init__(self, critic: QEnsemble, actor: GaussianActor) -> None:
        super().__init__()
        self.critic = critic
        self._actor = (actor,)  # a tuple: not a submodule, so not in this state dict

    def forward(self, obs: Tensor) -> Tensor:
        return self.critic.members(obs, self._actor[0](obs)).mean(0)


@dataclass
class Imagined:
    """One model rollout of ``N`` rows: what the losses need, step by step."""

    states: list[Tensor]
    """``H + 1`` states ``[N, S]``, the start first."""
    actions: list[Tensor]
    """``H + 1`` actions ``[N, A]``, one per state (the last for the terminal ``Q``)."""
    log_probs: Tensor
    """``[H + 1, N]`` log-densities of those actions."""
    rewards: Tensor
    """``[H, N]`` task rewards of the ``H`` steps."""
    alive: Tensor
    """``[H + 1, N]``: 1 while no termination has been predicted before that state."""


class ActorCriticTrainer:
    """Trains a :class:`GaussianActor` and a :class:`QEnsemble` through a fixed model.

    ``fit`` runs ``updates_per_step`` updates for each transition added since the last fit
    (all of them the first time), after ``critic_warmup`` critic-only updates on fresh
    rollouts of the refitted model. As in DHMBPO, the Adam moments start afresh at every fit
    (the model the gradients flow through has just changed) and the start-state buffer is
    refilled from the new model.
    """

    def __init__(
        self,
        actor: GaussianActor,
        critic: QEnsemble,
        model: DynamicsModel,
        task: Task,
        horizon: int = 5,
        gamma: float = 0.995,
        lr: float = 3e-4,
        batch_size: int = 256,
        updates_per_step: float = 1.0,
        critic_warmup: int = 250,
        rollout_horizon: int = 20,
        rollout_every: int = 20,
        rollouts_kept: int = 10,
        tau: float = 0.005,
        init_alpha: float = 0.1,
        reward_quantile: float = 0.01,
        rollout_states: int = 0,
    ) -> None:
        if min(horizon, batch_size, rollout_horizon, rollout_every, rollouts_kept) <= 0:
            raise ConfigError(
                "actor-critic horizon, batch_size and the rollout settings must be positive"
            )
        if not (0 < gamma < 1 and lr > 0 and updates_per_step > 0 and 0 < tau <= 1):
            raise ConfigError(
                "need gamma in (0, 1), lr > 0, updates_per_step > 0 and tau in (0, 1]; got "
                f"{gamma}, {lr}, {updates_per_step}, {tau}"
            )
        if not (init_alpha > 0 and 0 <= reward_quantile < 0.5 and critic_warmup >= 0):
            raise ConfigError("need init_alpha > 0, reward_quantile in [0, 0.5), warmup >= 0")
        self.actor, self.critic, self.model, self.task = actor, critic, model, task
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.horizon, self.gamma, self.lr, self.tau = horizon, gamma, lr, tau
        self.batch_size, self.updates_per_step = batch_size, updates_per_step
        self.critic_warmup = critic_warmup
        self.rollout_horizon, self.rollout_every = rollout_horizon, rollout_every
        self.reward_quantile = reward_quantile
        self.rollout_states = rollout_states
        device = actor.mid.device
        self.log_alpha = torch.tensor(math.log(init_alpha), device=device, requires_grad=True)
        self.target_entropy = -float(actor.mid.numel())
        self.capacity = rollouts_kept * max(rollout_every * batch_size, rollout_states)
        self.starts = torch.empty(0, model.obs_dim, device=device)
        self.trained_on = 0
        """Transitions in the buffer at the last fit."""
        self.bounds_set = False
        self.last_entropy = math.nan
        self._new_optimizers()

    def _new_optimizers(self) -> None:
        self.actor_optimizer = torch.optim.Adam(
            [{"params": self.actor.parameters()}, {"params": [self.log_alpha]}], lr=self.lr
        )
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.lr)

    @property
    def alpha(self) -> Tensor:
        return self.log_alpha.exp().detach()

    # -- rollouts ----------------------------------------------------------------------------

    def imagine(self, starts: Tensor, horizon: int) -> Imagined:
        """Roll ``starts [N, S]`` out ``horizon`` steps under the actor's samples (TS1 through
        the model); differentiable in the actor's weights unless run under ``no_grad``."""
        states, actions, log_probs, rewards, alive = (
            [starts],
            [],
            [],
            [],
            [torch.ones_like(starts[:, 0])],
        )
        obs = starts
        for _ in range(horizon):
            action, log_prob = self.actor.sample(obs)
            next_obs = self.model.step(obs, action, Propagation.TS1)
            rewards.append(self.task.reward(obs, action, next_obs))
            alive.append(alive[-1] * self.task.continuation(next_obs))
            actions.append(action)
            log_probs.append(log_prob)
            states.append(next_obs)
            obs = next_obs
        action, log_prob = self.actor.sample(obs)
        actions.append(action)
        log_probs.append(log_prob)
        return Imagined(
            states, actions, torch.stack(log_probs), torch.stack(rewards), torch.stack(alive)
        )

    def refill_starts(self, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        """One distribution rollout: batches of ``batch_size`` real states rolled
        ``rollout_horizon`` steps out until at least ``rollout_states`` states (one batch for
        0) were reached before a predicted termination; they join the start-state buffer
        (first in, first out, ``rollouts_kept`` rounds)."""
        device, reached, added = self.actor.mid.device, [], 0
        while not reached or added < self.rollout_states:
            rows = rng.integers(len(buffer), size=self.batch_size)
            with torch.no_grad():
                rollout = self.imagine(buffer.batch(rows, device).obs, self.rollout_horizon)
            reached.append(torch.stack(rollout.states)[rollout.alive.bool()])  # [M, S]
            added += len(reached[-1])
        self.starts = torch.cat([self.starts, *reached])[-self.capacity :]

    # -- losses ------------------------------------------------------------------------------

    def _discounted(self, rollout: Imagined, terminal_q: Tensor, first_entropy: bool) -> Tensor:
        """``[N]`` entropy-regularised ``H``-step return ending in ``terminal_q [N]``."""
        alpha, horizon = self.alpha, rollout.rewards.shape[0]
        soft = rollout.rewards - alpha * rollout.log_probs[:-1]
        if not first_entropy:  # Q(s_0, a_0) holds the entropy of a_0's successors only
            soft = torch.cat([rollout.rewards[:1], soft[1:]])
        discounts = self.gamma ** torch.arange(horizon, device=soft.device, dtype=soft.dtype)
        total = (discounts[:, None] * rollout.alive[:-1] * soft).sum(0)
        end = terminal_q - alpha * rollout.log_probs[-1]
        return total + self.gamma**horizon * rollout.alive[-1] * end

    def _critic_loss(self, rollout: Imagined) -> Tensor:
        with torch.no_grad():
            self._move_bounds(rollout)
            end_state, end_action = rollout.states[-1].detach(), rollout.actions[-1].detach()
            terminal = self.target.clipped(
                self.target.pessimistic(self.target.members(end_state, end_action))
            )
            rollout_detached = Imagined(
                rollout.states,
                rollout.actions,
                rollout.log_probs.detach(),
                rollout.rewards.detach(),
                rollout.alive,
            )
            target = self._discounted(rollout_detached, terminal, first_entropy=False)
        start, action = rollout.states[0].detach(), rollout.actions[0].detach()
        predicted = self.critic.members(start, action, dropout=True)
        return ((predicted - target) ** 2).mean(1).sum()

    def _move_bounds(self, rollout: Imagined) -> None:
        """Move ``[q_low, q_high]`` towards the reward quantiles over ``1 − γ`` (the returns an
        endless run of such rewards would give), at the learning rate; set them the first time."""
        soft = rollout.rewards - self.alpha * rollout.log_probs[:-1]
        q = torch.tensor([self.reward_quantile, 1 - self.reward_quantile], device=soft.device)
        low, high = torch.quantile(soft.flatten(), q) / (1 - self.gamma)
        rate = 1.0 if not self.bounds_set else self.lr
        for critic in (self.critic, self.target):
            critic.q_low.lerp_(low, rate)
            critic.q_high.lerp_(torch.maximum(high, low + 1e-3), rate)
        self.bounds_set = True

    def _step(
        self, optimizer: torch.optim.Optimizer, loss: Tensor, parameters: list[Tensor]
    ) -> None:
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"actor-critic training hit a non-finite loss ({loss.item()}); lower policy.lr "
                "or policy.horizon"
            )
        grads = torch.autograd.grad(loss, parameters)
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = grad
        optimizer.step()

    def update(self, train_actor: bool = True) -> float:
        """One update on ``batch_size`` start states: the critics always, the actor and ``α``
        with ``train_actor``. Returns the actor's objective (NaN without it)."""
        rows = torch.randint(len(self.starts), (self.batch_size,), device=self.starts.device)
        with torch.set_grad_enabled(train_actor):
            rollout = self.imagine(self.starts[rows], self.horizon)
        critic_params = list(self.critic.parameters())
        self._step(self.critic_optimizer, self._critic_loss(rollout), critic_params)
        with torch.no_grad():
            for target, online in zip(self.target.parameters(), critic_params, strict=True):
                target.lerp_(online, self.tau)
        if not train_actor:
            return math.nan
        terminal = self.critic.members(rollout.states[-1], rollout.actions[-1]).mean(0)
        objective = self._discounted(rollout, terminal, first_entropy=True).mean()
        entropy = -rollout.log_probs[0].detach().mean()
        alpha_loss = -self.log_alpha.exp() * (self.target_entropy - entropy)
        actor_params = [*self.actor.parameters(), self.log_alpha]
        self._step(self.actor_optimizer, alpha_loss - objective, actor_params)
        self.last_entropy = entropy.item()
        return objective.item()

    def fit(
        self, buffer: ReplayBuffer, rng: np.random.Generator, progress: bool = False
    ) -> PolicyFit:
        """Warm up the critics on the refitted model, then train both on the new data; with
        ``progress`` a bar shows the actor's objective, ``α`` and the critics' range."""
        if len(buffer) == 0:
            raise ConfigError("cannot train the actor-critic on an empty buffer")
        updates = math.ceil(self.updates_per_step * (len(buffer) - self.trained_on))
        self.trained_on = len(buffer)
        self._fit_normalizers(buffer)
        self._new_optimizers()
        self.starts = self.starts[:0]
        self.refill_starts(buffer, rng)
        for _ in range(self.critic_warmup):
            self.update(train_actor=False)
        objectives, entropies = [], []
        bar = tqdm(range(updates), desc="actor-critic", leave=False, disable=not progress)
        for step in bar:
            if step and step % self.rollout_every == 0:
                self.refill_starts(buffer, rng)
            objectives.append(self.update())
            entropies.append(self.last_entropy)
            if step % 100 == 0:
                bar.set_postfix(
                    objective=f"{objectives[-1]:.1f}",
                    alpha=f"{self.alpha.item():.3f}",
                    q=f"[{self.critic.q_low.item():.0f}, {self.critic.q_high.item():.0f}]",
                )
        bar.close()
        if not objectives:
            return PolicyFit(math.nan, False, alpha=self.alpha.item())
        return PolicyFit(
            float(np.mean(objectives[-100:])),
            False,
            alpha=self.alpha.item(),
            entropy=float(np.mean(entropies[-100:])),
        )

    def _fit_normalizers(self, buffer: ReplayBuffer) -> None:
        """Refit the actor's and the critics' observation statistics (where they have them)
        to every observation in the buffer."""
        norms = [m.obs_norm for m in (self.actor, self.critic, self.target)]
        if all(norm is None for norm in norms):
            return
        observations = buffer.batch(np.arange(len(buffer)), self.actor.mid.device).obs
        for norm in norms:
            if norm is not None:
                norm.fit(observations)

    def state_dict(self) -> dict:
        return {
            "target": self.target.state_dict(),
            "log_alpha": self.log_alpha.detach().clone(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "trained_on": self.trained_on,
            "bounds_set": self.bounds_set,
        }

    def load_state_dict(self, state: dict) -> None:
        self.target.load_state_dict(state["target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        load_optimizer_state(self.actor_optimizer, state["actor_optimizer"])
        load_optimizer_state(self.critic_optimizer, state["critic_optimizer"])
        self.trained_on, self.bounds_set = int(state["trained_on"]), bool(state["bounds_set"])
