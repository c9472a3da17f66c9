"""Batch containers, protocols and the shape conventions used across dynaplan.

Shapes: ``S`` observation size, ``A`` action size, ``H`` planning horizon,
``B`` batch of candidate action sequences, ``E`` ensemble members, ``N`` rows.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor


class TransitionBatch(NamedTuple):
    """A batch of transitions, as tensors on one device."""

    obs: Tensor  # [N, S]
    action: Tensor  # [N, A]
    next_obs: Tensor  # [N, S]
    reward: Tensor  # [N]
    terminated: Tensor  # [N] bool


class Propagation(StrEnum):
    """How particles move through an ensemble during planning (PETS, Chua et al. 2018)."""

    EXPECTATION = "expectation"
    """Every particle gets the mean prediction of all members (deterministic)."""
    TS1 = "ts1"
    """Each particle uses a member drawn at random at every step."""
    TSINF = "tsinf"
    """Each particle keeps one member for the whole horizon."""


class ValueKind(StrEnum):
    """Which terminal value the planning objective adds (``ValueConfig.kind``)."""

    CRITIC = "critic"
    """An ensemble of critics learned by TD (``dynaplan.values``); any task."""
    LQR = "lqr"
    """The LQR cost-to-go of the linearised model (``dynaplan.lqr``); regulation tasks."""


class PolicyKind(StrEnum):
    """Which policy ``PolicyConfig.kind`` learns through the model."""

    DETERMINISTIC = "deterministic"
    """``dynaplan.policy``: a deterministic prior on ``Σ γ^k r̂_k + γ^H V(ŝ_H)``, ``V`` the
    terminal value (``value.enabled``) when there is one."""
    ACTOR_CRITIC = "actor-critic"
    """``dynaplan.actor_critic``: a stochastic actor with its own ``Q`` critics, entropy
    weight and distribution rollouts (SAC-SVG(H), DHMBPO); its soft value is the planner's
    terminal value."""


class Precision(StrEnum):
    """Arithmetic of the model's matrix products during planning (states stay fp32)."""

    FP32 = "fp32"
    """Full fp32: the reference every other choice is measured against."""
    TF32 = "tf32"
    """TF32 tensor cores on CUDA (fp32 elsewhere)."""
    BF16 = "bf16"
    """bfloat16 autocast of the model's layers; rewards and states stay fp32."""


class Objective(Protocol):
    """A batched planning objective; planners know nothing else about the problem."""

    def __call__(self, actions: Tensor) -> Tensor:
        """Predicted returns ``[B]`` of action sequences ``actions: [B, H, A]``."""
        ...


class Planner(Protocol):
    """Optimises an action sequence ``[H, A]`` for an objective, warm-started between calls."""

    horizon: int
    device: torch.device
    generator: torch.Generator
    """The planner's own randomness; the MPC agent hands it to the objective too."""

    def plan(
        self, objective: Objective, steps_since_last_plan: int = 1, proposal: Tensor | None = None
    ) -> Tensor:
        """Best action sequence ``[H, A]``; the previous plan, shifted, seeds the search, and
        so does ``proposal [H, A]`` (env units) when given."""
        ...

    def reset(self) -> None:
        """Forget the warm start (call at the start of an episode)."""
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Agent(Protocol):
    """Anything that acts in an environment: MPC, a cloned policy, a baseline."""

    def reset(self) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Action ``[A]`` for observation ``[S]``."""
        ...


def as_tensor(x: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """float32 tensor on ``device``."""
    return torch.as_tensor(x, dtype=torch.float32, device=device)
