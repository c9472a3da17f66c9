"""The planning objective: roll a learned model forward and sum discounted task rewards.

The rollout is the hot path of every planner. With ``compiled=True`` it goes through
``torch.compile`` (fused elementwise kernels), one compiled program per model, task and batch
shape; where compilation fails (no C++ compiler, an unsupported op) planning warns once and
stays eager. Launch overhead on a GPU is the planner's business: it captures the whole plan,
compiled rollouts included, as one CUDA graph (see ``dynaplan.planners.base``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from dynaplan.models import DynamicsModel
from dynaplan.tasks import Task
from dynaplan.types import Precision, Propagation

TerminalValue = Callable[[Tensor], Tensor]
"""``V(obs [N, S]) -> [N]``, added as ``γ^H V(ŝ_H)`` for rollouts still alive at the horizon."""


class ModelObjective:
    """``f(actions [B, H, A]) -> returns [B]`` from a fixed start observation.

    Each sequence is rolled out by ``particles`` particles (rows ``b * P + p``), and the
    return is their mean. Rewards stop accumulating after a predicted termination.

    Args:
        model: the learned dynamics.
        task: supplies the differentiable reward and the termination rule.
        start: ``[S]`` the current observation; kept as a copy, update it in place
            (``objective.start.copy_(obs)``) to plan from a new state with the same objective.
        gamma: discount factor.
        particles: rollouts per sequence (``P``); with ``TSINF`` a multiple of the elites.
        propagation: how particles use the ensemble members.
        terminal_value: optional value of the last predicted state.
        generator: randomness of the TS modes and probabilistic sampling.
        compiled: roll out through ``torch.compile`` (see the module docstring).
        disagreement_penalty: ``λ``; each predicted reward loses ``λ`` times the ensemble's
            disagreement about that step (``DynamicsModel.step_with_disagreement``), so plans
            avoid where the model extrapolates. Needs ``EXPECTATION`` propagation.
        precision: arithmetic of the model's matrix products (``Precision``); the
            benchmark ``planning_speed.py`` measures what TF32 and bf16 change in the returns.
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
        compiled: bool = False,
        precision: Precision = Precision.FP32,
        disagreement_penalty: float = 0.0,
    ) -> None:
        if start.ndim != 1:
            raise ValueError(f"start must be one observation [S], got shape {tuple(start.shape)}")
        if disagreement_penalty and propagation != Propagation.EXPECTATION:
            raise ValueError("a disagreement penalty needs expectation propagation")
        self.model, self.task, self.start = model, task, start.clone()
        self.gamma, self.particles, self.propagation = gamma, particles, propagation
        self.terminal_value = terminal_value
        self.generator, self.compiled = generator, compiled
        self.precision = Precision(precision)
        self.disagreement_penalty = disagreement_penalty

    def __call__(self, actions: Tensor) -> Tensor:
        if actions.ndim != 3:
            raise ValueError(f"actions must be [B, H, A], got shape {tuple(actions.shape)}")
        args = (
            self.model,
            self.task,
            self.start,
            actions,
            self.gamma,
            self.particles,
            self.propagation,
            self.terminal_value,
            self.generator,
            self.disagreement_penalty,
        )
        with (
            matmul_precision(self.precision, actions.device),
            frozen(self.model, self.terminal_value),
        ):
            if self.compiled:
                compiled = _compiled_rollout(actions.device)
                if compiled is not None:
                    try:
                        return compiled(*args).float()
                    except Exception as exc:  # inductor/dynamo errors have no common base class
                        _disable_compilation(actions.device, exc)
            return rollout_returns(*args).float()


@contextlib.contextmanager
def frozen(*modules: object) -> Iterator[None]:
    """Inside the block, no parameter of ``modules`` (those that are modules) requires grad.

    Planning differentiates only in the actions. Eager autograd skips the weight gradients
    anyway, but a ``torch.compile``-d rollout's backward computes a gradient for every input
    that requires one: frozen, its backward is half the matrix products (measured: the
    compiled 40-candidate gradient plan on the CPU took 235-245 ms instead of 365-385).
    """
    params = [
        p
        for module in modules
        if isinstance(module, nn.Module)
        for p in module.parameters()
        if p.requires_grad
    ]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def matmul_precision(precision: Precision, device: torch.device) -> Iterator[None]:
    """Run the block's matrix products in ``precision`` (TF32 only changes CUDA matmuls)."""
    if precision == Precision.BF16:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    elif precision == Precision.TF32 and device.type == "cuda":
        before = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
    else:
        yield


def rollout_returns(
    model: DynamicsModel,
    task: Task,
    start: Tensor,
    actions: Tensor,
    gamma: float,
    particles: int,
    propagation: Propagation,
    terminal_value: TerminalValue | None,
    generator: torch.Generator | None,
    disagreement_penalty: float = 0.0,
) -> Tensor:
    """Mean discounted return ``[B]`` of ``actions [B, H, A]`` from ``start [S]``."""
    num_sequences, horizon, _ = actions.shape
    rows = num_sequences * particles
    actions = actions.repeat_interleave(particles, dim=0)  # [B * P, H, A]
    total = discounted_returns(
        model,
        task,
        start.expand(rows, -1),
        lambda t, obs: actions[:, t],
        horizon,
        gamma,
        propagation,
        terminal_value,
        generator,
        disagreement_penalty,
    )
    return total.view(num_sequences, particles).mean(1)


def discounted_returns(
    model: DynamicsModel,
    task: Task,
    obs: Tensor,
    act: Callable[[int, Tensor], Tensor],
    horizon: int,
    gamma: float,
    propagation: Propagation = Propagation.EXPECTATION,
    terminal_value: TerminalValue | None = None,
    generator: torch.Generator | None = None,
    disagreement_penalty: float = 0.0,
) -> Tensor:
    """``Σ_t γ^t r̂_t (+ γ^H V(ŝ_H))`` ``[N]`` of rows ``obs [N, S]`` acting ``act(t, obs_t)``.

    Rewards stop after a predicted termination; differentiable in the actions. The stop is a
    0/1 mask, so it has no gradient of its own: a plan does not feel the future it loses.
    With ``task.termination_gradient`` and a terminal value, the step of a rollout's first
    predicted termination adds ``γ^(t+1) V(s_0) (c − c̄)``, ``c`` the task's soft continuation
    and ``c̄`` its detached copy: nothing to the return, but the gradient of ``c`` weighted by
    the start state's value (what a fall within the horizon roughly loses, floored at 0 so
    that an early or pessimistic critic never rewards a fall; one value pass per row rather
    than one per step), which pushes the plan back inside the ranges. Only planners that
    follow gradients (grad, cem-grad) use it.
    """
    alive = torch.ones(obs.shape[0], device=obs.device)
    total = torch.zeros(obs.shape[0], device=obs.device)
    feel_termination = task.termination_gradient and terminal_value is not None
    if feel_termination:
        with torch.no_grad():  # a weight, not a term of the return
            start_value = terminal_value(obs).clamp(min=0)
    for t in range(horizon):
        action = act(t, obs)
        if disagreement_penalty:
            next_obs, disagreement = model.step_with_disagreement(obs, action)
            reward = task.reward(obs, action, next_obs) - disagreement_penalty * disagreement
        else:
            next_obs = model.step(obs, action, propagation, generator)
            reward = task.reward(obs, action, next_obs)
        total = total + (gamma**t) * alive * reward
        continues = task.continuation(next_obs).float()
        if feel_termination:
            lost = (gamma ** (t + 1)) * alive * (1 - continues) * start_value
            soft = task.soft_continuation(next_obs).float()
            total = total + lost * (soft - soft.detach())
        alive = alive * continues
        obs = next_obs
    if terminal_value is not None:
        total = total + (gamma**horizon) * alive * terminal_value(obs)
    return total


_COMPILED: dict[str, Callable[..., Tensor] | None] = {}
"""Per device type: the compiled rollout, or None once compilation has failed."""


def _compiled_rollout(device: torch.device) -> Callable[..., Tensor] | None:
    if device.type not in _COMPILED:
        _COMPILED[device.type] = torch.compile(rollout_returns, dynamic=False)
    return _COMPILED[device.type]


def _disable_compilation(device: torch.device, exc: Exception) -> None:
    warnings.warn(
        f"torch.compile of the planning rollout failed ({type(exc).__name__}: {exc}); "
        "planning continues eagerly (set compile=False to silence this)",
        RuntimeWarning,
        stacklevel=3,
    )
    _COMPILED[device.type] = None
