"""A quadratic terminal value for regulation tasks: LQR on the learned model's linearisation.

Receding-horizon control of a task whose reward is a quadratic bowl around an equilibrium
(InvertedPendulum: pole upright, cart centred) is unstable when the horizon is short: the
objective only sees the next ``H`` steps, and on the pendulum the slow cart mode needs far
longer (the cart drifts into the end of its rail and the pole falls). The textbook remedy is a
terminal cost equal to the infinite-horizon cost-to-go of the linearised system.
:class:`LQRValue` builds it from what dynaplan already has, with nothing to learn:

- ``A = ∂f/∂s``, ``B = ∂f/∂a`` of the learned model at the task's equilibrium ``(s*, a*)``;
- ``Q = −½ ∂²r/∂s'²``, ``R = −½ ∂²r/∂a²`` of the task's reward there, and ``r* = r(s*, a*, s*)``;
- ``P`` from the discounted Riccati recursion ``P ← Q + γAᵀPA − γ²AᵀPB (R + γBᵀPB)⁻¹ BᵀPA``;

and plans with ``V(s) = r*/(1 − γ) − ((s − s*)ᵀP(s − s*) − (s − s*)ᵀQ(s − s*))/γ``: the
discounted return of staying near the equilibrium under the LQR feedback (the reward is
counted on next states, hence the ``Q`` correction). ``r*/(1 − γ)`` keeps the value of staying
alive above the zero of a predicted termination. Refit it (:meth:`LQRValue.fit`) after each
model fit: two Jacobians and the recursion in 64-bit on ``S × S`` matrices, about 10 ms for the
pendulum on a CPU, once per fit and never while planning.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor, nn

from dynaplan.errors import ConfigError
from dynaplan.models import DynamicsModel
from dynaplan.tasks import Task

RIDGE = 1e-6
"""Added to ``R``: rewards without an action cost (the pendulum's) give ``R = 0``."""


class LQRValue(nn.Module):
    """``V(obs [N, S]) -> [N]``, the LQR cost-to-go of the linearised learned model.

    Args:
        task: a task with an ``equilibrium()`` (raises ConfigError otherwise).
        gamma: discount of the value, in (0, 1).
        max_iterations, tolerance: of the Riccati recursion.
    """

    def __init__(
        self, task: Task, gamma: float = 0.99, max_iterations: int = 5000, tolerance: float = 1e-9
    ) -> None:
        super().__init__()
        equilibrium = task.equilibrium()
        if equilibrium is None:
            raise ConfigError(
                f"value.kind lqr needs a task with an equilibrium to regulate around "
                f"(InvertedPendulum-v5); {type(task).__name__} has none: use value.kind critic"
            )
        if not 0 < gamma < 1:
            raise ConfigError(f"the LQR value needs gamma in (0, 1), got {gamma}")
        self.gamma = gamma
        self.max_iterations, self.tolerance = max_iterations, tolerance
        obs, act = (x.detach().double() for x in equilibrium)
        state_cost, action_cost, reward = _quadratic_reward(task, obs, act)
        self.q, self.r = state_cost, action_cost + RIDGE * np.eye(act.numel())
        self.register_buffer("obs_eq", obs.float())
        self.register_buffer("act_eq", act.float())
        self.register_buffer("state_cost", torch.from_numpy(state_cost).float())
        self.register_buffer("cost_to_go", torch.from_numpy(state_cost).float())
        self.offset = float(reward) / (1 - gamma)
        self.converged = False
        self.closed_loop_radius = float("nan")
        """Spectral radius of ``A − BK`` on the model (< 1: the LQR stabilises it)."""

    def fit(self, model: DynamicsModel) -> None:
        """Linearise ``model`` at the equilibrium and solve for ``P``. Where the recursion does
        not converge (a model not yet stabilisable), ``P`` falls back to ``Q`` and it warns."""
        a, b = _linearise(model, self.obs_eq, self.act_eq)
        p, gain = self.q, None
        self.converged = False
        with np.errstate(all="ignore"):
            for _ in range(self.max_iterations):
                gain = np.linalg.solve(self.r + self.gamma * b.T @ p @ b, self.gamma * b.T @ p @ a)
                new = self.q + self.gamma * a.T @ p @ (a - b @ gain)
                if not np.isfinite(new).all():
                    break
                done = np.abs(new - p).max() <= self.tolerance * max(1.0, np.abs(new).max())
                p = new
                if done:
                    self.converged = True
                    break
        if self.converged:
            self.closed_loop_radius = float(np.abs(np.linalg.eigvals(a - b @ gain)).max())
            self.cost_to_go.copy_(torch.from_numpy((p + p.T) / 2))
        else:
            warnings.warn(
                "the LQR value's Riccati recursion did not converge on this model; the "
                "terminal value uses the one-step cost until the next model fit",
                RuntimeWarning,
                stacklevel=2,
            )
            self.closed_loop_radius = float("nan")
            self.cost_to_go.copy_(self.state_cost)

    def forward(self, obs: Tensor) -> Tensor:
        delta = obs - self.obs_eq
        future = ((delta @ self.cost_to_go) * delta).sum(-1)
        now = ((delta @ self.state_cost) * delta).sum(-1)
        return self.offset - (future - now) / self.gamma


def _quadratic_reward(task: Task, obs: Tensor, act: Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """``Q [S, S]``, ``R [A, A]`` and ``r*`` of the task's reward at its equilibrium."""

    def reward(next_obs: Tensor, action: Tensor) -> Tensor:
        return task.reward(obs, action, next_obs)

    (hess_obs, _), (_, hess_act) = torch.autograd.functional.hessian(reward, (obs, act))
    state_cost, action_cost = -hess_obs.numpy() / 2, -hess_act.numpy() / 2
    for name, cost in (("next observation", state_cost), ("action", action_cost)):
        if np.linalg.eigvalsh((cost + cost.T) / 2).min() < -1e-9:
            raise ConfigError(
                f"{type(task).__name__}'s reward is not concave in the {name} at its "
                "equilibrium, so it has no LQR value: use value.kind critic"
            )
    return state_cost, action_cost, float(reward(obs, act))


def _linearise(model: DynamicsModel, obs: Tensor, act: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``A [S, S]``, ``B [S, A]``: the Jacobians of the model's mean next observation."""
    was_training = model.training
    model.eval()
    with torch.enable_grad():
        a, b = torch.autograd.functional.jacobian(
            lambda s, u: model.step(s[None], u[None])[0], (obs, act)
        )
    model.train(was_training)
    return a.double().cpu().numpy(), b.double().cpu().numpy()
