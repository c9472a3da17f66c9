"""Built-in tasks for the Gymnasium MuJoCo v5 environments.

Every constant (healthy ranges, reward weights, ``dt``, observation layout flags) is read
from the *unwrapped* env when the task is built, so a task follows the env's configuration
(``gym.make("Hopper-v5", healthy_z_range=(0.5, 2.0))`` and the like). A configuration whose
observation layout these tasks do not support raises :class:`ConfigError`.

All functions take batches with any leading shape: ``obs: [..., S]``, ``act: [..., A]``,
``next_obs: [..., S]`` give ``[...]``, in the inputs' dtype and device (bool for
``terminated``).

Locomotion surrogates follow the paper's soft health indicator: with ``m`` the signed
margin by which ``next_obs`` lies inside the env's healthy ranges (the smallest distance to
any bound, negative outside), ``σ = tanh(k·m)`` and

    r = (forward_reward_weight·vx + healthy_reward)·σ − ctrl_cost_weight·‖a‖² [− contact cost]

where ``vx`` is the torso's x velocity read from ``next_obs``. Taking one margin over all the
ranges (instead of a product of one ``tanh`` per range) keeps ``σ`` negative whenever any range
is violated: a product of two negative factors would reward being unhealthy twice over.
For a symmetric angle range the margin is ``θ_max − |θ|``, the paper's form.
"""

from __future__ import annotations

import copy
import math
from functools import reduce
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from dynaplan.errors import ConfigError
from dynaplan.tasks.base import Task
from dynaplan.tasks.registry import register

DEFAULT_SHARPNESS = 20.0
"""``k`` of the soft health indicator ``tanh(k·margin)``."""

INVERTED_PENDULUM_MAX_ANGLE = 0.2
"""InvertedPendulum-v5 terminates when ``|θ| > 0.2``; the env hard-codes it (no attribute)."""


def range_margin(x: Tensor, low: float, high: float) -> Tensor:
    """Signed distance of ``x`` inside ``(low, high)``: ``min(x − low, high − x)``, shape of ``x``.

    An infinite bound constrains nothing; with both bounds infinite the margin is ``+inf``.
    """
    margins = [x - low] if math.isfinite(low) else []
    if math.isfinite(high):
        margins.append(high - x)
    if not margins:
        return torch.full_like(x, math.inf)
    return reduce(torch.minimum, margins)


def soft_health(margin: Tensor, sharpness: float) -> Tensor:
    """Soft indicator ``tanh(sharpness·margin)``: ≈1 well inside, ≈−1 well outside, ``[...]``."""
    return torch.tanh(sharpness * margin)


def control_cost(act: Tensor, weight: float) -> Tensor:
    """``weight·‖a‖²`` over the last axis: ``[..., A] -> [...]``."""
    return weight * act.square().sum(dim=-1)


def _in_open_range(x: Tensor, low: float, high: float) -> Tensor:
    """``low < x < high`` elementwise (bool), as the envs' ``is_healthy`` compares."""
    return (low < x) & (x < high)


def _read(env: gym.Env, name: str) -> Any:
    """An attribute of the unwrapped env, or a ConfigError naming the env it came from."""
    try:
        return getattr(env, name)
    except AttributeError:
        raise ConfigError(
            f"{type(env).__name__} has no attribute {name!r}; this task needs the Gymnasium "
            "v5 MuJoCo env it is registered for"
        ) from None


def _float_pair(pair: Any) -> tuple[float, float]:
    """A ``(low, high)`` range from the env as two floats."""
    low, high = pair
    return float(low), float(high)


def _obs_dim(env: gym.Env) -> int:
    shape = env.observation_space.shape
    assert shape is not None and len(shape) == 1, shape
    return int(shape[0])


class InvertedPendulumTask(Task):
    """InvertedPendulum-v5: obs ``[slider x, hinge θ, ẋ, θ̇]`` (``qpos`` then ``qvel``).

    Surrogate ``r = 1 − (θ'/θ_max)² − w·(x'/x_max)²``: the paper's ``−θ²``, shifted and
    scaled, plus a small cart-centring term. The shift makes staying upright worth more
    than the zero reward after a predicted termination (with ``−θ²`` a planner that stops
    counting rewards at termination would prefer to fall). The centring term (weight
    ``cart_weight``, rail half-length ``x_max`` read from the slider's joint range) keeps
    the cart off the end of its rail: with ``−θ²`` alone the cart drifts there at a
    steady speed and the pole falls after a few hundred steps. ``cart_weight=0`` gives
    the paper's objective.

    The env's reward is ``1`` while not terminated and ``0`` on the terminating step, which
    the next observation determines exactly: ``true_reward`` is it.
    """

    env_id = "InvertedPendulum-v5"

    def __init__(self, env: gym.Env, cart_weight: float = 0.1) -> None:
        env = env.unwrapped
        nq, nv = int(env.model.nq), int(env.model.nv)
        self.obs_dim = _obs_dim(env)
        if nq != 2 or self.obs_dim != nq + nv:
            raise ConfigError(
                f"InvertedPendulumTask expects obs [x, θ, ẋ, θ̇] (4 values), got {self.obs_dim} "
                f"with nq={nq}, nv={nv}"
            )
        self.max_angle = INVERTED_PENDULUM_MAX_ANGLE
        self.max_cart = float(np.abs(env.model.jnt_range[0]).min())
        self.cart_weight = cart_weight
        self.dt = float(env.dt)
        self.angle_index = 1

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        angle = next_obs[..., self.angle_index] / self.max_angle
        cart = next_obs[..., 0] / self.max_cart
        return 1 - angle.square() - self.cart_weight * cart.square()

    def true_reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        return (~self.terminated(next_obs)).to(next_obs.dtype)

    def equilibrium(self) -> tuple[Tensor, Tensor]:
        """Pole upright and still, cart centred, no force."""
        return torch.zeros(self.obs_dim), torch.zeros(1)

    def terminated(self, next_obs: Tensor) -> Tensor:
        finite = torch.isfinite(next_obs).all(dim=-1)
        return ~(finite & (next_obs[..., self.angle_index].abs() <= self.max_angle))


class _LocomotionTask(Task):
    """Shared layout of the forward-running envs: ``qpos[skipped:]`` then ``qvel`` (+ extras).

    ``vx = qvel[0]`` sits at obs index ``nq − skipped``. The env's forward reward is the
    position difference ``(x' − x)/dt`` over ``frame_skip`` integrator substeps, which is not
    ``qvel[0]`` of the next state (it is a mean over the substeps; Hopper and Walker2d also clip
    the observed velocities to ±10), so no locomotion task implements ``true_reward``.
    """

    skipped_qpos = 1

    def __init__(self, env: gym.Env) -> None:
        env = env.unwrapped
        if not _read(env, "_exclude_current_positions_from_observation"):
            raise ConfigError(
                f"{type(self).__name__} needs the default observation layout; build the env "
                "with exclude_current_positions_from_observation=True (the default)"
            )
        self.forward_reward_weight = float(_read(env, "_forward_reward_weight"))
        self.ctrl_cost_weight = float(_read(env, "_ctrl_cost_weight"))
        self.dt = float(env.dt)
        self.nq, self.nv = int(env.model.nq), int(env.model.nv)
        self.obs_dim = _obs_dim(env)
        self.vx_index = self.nq - self.skipped_qpos
        self.state_dim = self.nq - self.skipped_qpos + self.nv
        if self.obs_dim < self.state_dim:
            raise ConfigError(
                f"{type(self).__name__}: obs has {self.obs_dim} values, fewer than "
                f"qpos[{self.skipped_qpos}:] + qvel ({self.state_dim})"
            )

    def forward_velocity(self, obs: Tensor) -> Tensor:
        """The torso's x velocity ``qvel[0]``: ``[..., S] -> [...]``."""
        return obs[..., self.vx_index]


class HalfCheetahTask(_LocomotionTask):
    """HalfCheetah-v5: obs ``qpos[1:]`` (8) then ``qvel`` (9), ``vx`` at index 8.

    ``r = forward_reward_weight·vx' − ctrl_cost_weight·‖a‖²``; never terminates.
    No ``true_reward``: see :class:`_LocomotionTask` on ``vx``.
    """

    env_id = "HalfCheetah-v5"

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        forward = self.forward_reward_weight * self.forward_velocity(next_obs)
        return forward - control_cost(act, self.ctrl_cost_weight)


class _HealthyLocomotionTask(_LocomotionTask):
    """A locomotion task with a healthy-state rule: soft in the reward, exact in termination.

    ``r = (forward_reward_weight·vx' + healthy_reward)·tanh(k·m(next_obs)) − ctrl cost
    − state cost``, with ``m`` the signed health margin of the subclass less the safety margin
    (0 unless set by :meth:`with_safety_margin`).
    """

    def __init__(self, env: gym.Env, *, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__(env)
        env = env.unwrapped
        self.sharpness = float(sharpness)
        self.safety_margin = 0.0  # see with_safety_margin
        self.hard_health = False  # see with_hard_health
        self.healthy_reward = float(_read(env, "_healthy_reward"))
        self.terminate_when_unhealthy = bool(_read(env, "_terminate_when_unhealthy"))
        self.healthy_z_range = _float_pair(_read(env, "_healthy_z_range"))

    def health_margin(self, obs: Tensor) -> Tensor:
        """Signed margin inside the healthy ranges (negative when unhealthy): ``[...]``."""
        raise NotImplementedError

    def is_healthy(self, obs: Tensor) -> Tensor:
        """The env's exact ``is_healthy`` on an observation: bool ``[...]``."""
        raise NotImplementedError

    def state_cost(self, next_obs: Tensor) -> Tensor:
        """Costs read from the next observation besides control (none by default): ``[...]``."""
        return next_obs.new_zeros(next_obs.shape[:-1])

    def with_safety_margin(self, margin: float) -> _HealthyLocomotionTask:
        """A copy whose reward and termination treat a state as unhealthy once its health
        margin falls to ``margin`` (in the ranges' own units: metres for ``z``, radians for
        angles); the exact rule still applies on top."""
        if not margin >= 0:
            raise ConfigError(f"the safety margin must be >= 0, got {margin}")
        task = copy.copy(self)
        task.safety_margin = float(margin)
        return task

    def with_termination_gradient(self, enabled: bool) -> _HealthyLocomotionTask:
        """A copy whose rollouts give a predicted termination a gradient (see ``Task``)."""
        if not enabled:
            return self
        task = copy.copy(self)
        task.termination_gradient = True
        return task

    def soft_continuation(self, next_obs: Tensor) -> Tensor:
        """``sigmoid(2k·m) = (1 + tanh(k·m)) / 2``, with ``m`` the health margin less the safety
        margin and ``k`` the soft health's sharpness; 1 where the env never terminates."""
        if not self.terminate_when_unhealthy:
            return next_obs.new_ones(next_obs.shape[:-1])
        margin = self.health_margin(next_obs) - self.safety_margin
        return torch.sigmoid(2 * self.sharpness * margin)

    def with_hard_health(self, enabled: bool) -> _HealthyLocomotionTask:
        """A copy whose reward is ``forward_reward_weight·vx' + healthy_reward·healthy(s')
        − costs``, the env's own form (``healthy`` its exact rule, the safety margin's bound
        included): no gradient from the health rule, which the rollout's termination carries."""
        if not enabled:
            return self
        task = copy.copy(self)
        task.hard_health = True
        return task

    def reward(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        if self.hard_health:
            healthy = (~self.terminated(next_obs)).to(next_obs.dtype)
            if not self.terminate_when_unhealthy:
                healthy = self.is_healthy(next_obs).to(next_obs.dtype)
            forward = self.forward_reward_weight * self.forward_velocity(next_obs)
            costs = control_cost(act, self.ctrl_cost_weight) + self.state_cost(next_obs)
            return forward + self.healthy_reward * healthy - costs
        gain = self.forward_reward_weight * self.forward_velocity(next_obs) + self.healthy_reward
        margin = self.health_margin(next_obs) - self.safety_margin
        health = soft_health(margin, self.sharpness)
        costs = control_cost(act, self.ctrl_cost_weight) + self.state_cost(next_obs)
        return gain * health - costs

    def terminated(self, next_obs: Tensor) -> Tensor:
        if not self.terminate_when_unhealthy:
            return super().terminated(next_obs)
        unhealthy = ~self.is_healthy(next_obs)
        if self.safety_margin:
            unhealthy = unhealthy | (self.health_margin(next_obs) <= self.safety_margin)
        return unhealthy


class _PlanarWalkerTask(_HealthyLocomotionTask):
    """Hopper and Walker2d: obs ``qpos[1:]`` then clipped ``qvel``; ``z`` at 0, torso angle at 1.

    Healthy when ``z`` and the angle lie strictly inside the env's ranges.
    """

    z_index = 0
    angle_index = 1

    def __init__(self, env: gym.Env, *, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__(env, sharpness=sharpness)
        self.healthy_angle_range = _float_pair(_read(env.unwrapped, "_healthy_angle_range"))

    def health_margin(self, obs: Tensor) -> Tensor:
        return torch.minimum(
            range_margin(obs[..., self.z_index], *self.healthy_z_range),
            range_margin(obs[..., self.angle_index], *self.healthy_angle_range),
        )

    def is_healthy(self, obs: Tensor) -> Tensor:
        healthy_z = _in_open_range(obs[..., self.z_index], *self.healthy_z_range)
        angle = obs[..., self.angle_index]
        return healthy_z & _in_open_range(angle, *self.healthy_angle_range)


class HopperTask(_PlanarWalkerTask):
    """Hopper-v5: obs ``qpos[1:]`` (z, torso angle, 3 joints) then ``qvel`` (6), ``vx`` at 5.

    Besides ``z`` and the angle, the env requires every entry of ``state_vector()[2:]``
    (``qpos[2:]`` and ``qvel``, i.e. ``obs[1:]``) strictly inside ``healthy_state_range``.
    The observation clips ``qvel`` to ±10, so that check is exact from observations while the
    range lies within ``[−10, 10]``; with the default ``(−100, 100)`` a velocity beyond ±100
    (never seen in practice) would end the episode unobserved. The soft margin ignores the state
    range, which is far from binding. No ``true_reward``: see :class:`_LocomotionTask`.
    """

    env_id = "Hopper-v5"

    def __init__(self, env: gym.Env, *, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__(env, sharpness=sharpness)
        self.healthy_state_range = _float_pair(_read(env.unwrapped, "_healthy_state_range"))

    def is_healthy(self, obs: Tensor) -> Tensor:
        state = obs[..., self.angle_index : self.state_dim]
        healthy_state = _in_open_range(state, *self.healthy_state_range).all(dim=-1)
        return super().is_healthy(obs) & healthy_state


class Walker2dTask(_PlanarWalkerTask):
    """Walker2d-v5: obs ``qpos[1:]`` (z, torso angle, 6 joints) then ``qvel`` (9), ``vx`` at 8.

    Healthy: ``z`` and the torso angle strictly inside their ranges (no state-range check).
    No ``true_reward``: see :class:`_LocomotionTask`.
    """

    env_id = "Walker2d-v5"


class AntTask(_HealthyLocomotionTask):
    """Ant-v5: obs ``qpos[2:]`` (z, torso quaternion, 8 joints: 13) then ``qvel`` (14), ``vx`` at
    13, then, when ``include_cfrc_ext_in_observation`` (the v5 default), the clipped external
    contact forces ``cfrc_ext[1:]`` (13 bodies × 6 = 78): 105 values, else 27.

    Healthy: the state is finite and ``z_min <= z <= z_max`` (inclusive, unlike Hopper). The
    surrogate's margin uses both ends of the z range. The env does not end an episode when the
    ant flips over (it lies on its back at z ≈ 0.27, inside the range, and never walks again);
    :meth:`with_min_upright` makes the surrogate treat a tilted torso as unhealthy too.

    The env's reward subtracts ``contact_cost_weight·‖clip(cfrc_ext)‖²`` over all bodies; the
    world body's row is always zero, so where the forces are observed the surrogate subtracts
    that cost exactly, and without them it cannot. No ``true_reward``: the forward term is the
    main body's position difference over ``dt`` (see :class:`_LocomotionTask`).
    """

    env_id = "Ant-v5"
    skipped_qpos = 2
    z_index = 0
    quaternion_index = 1
    """The torso quaternion ``(w, x, y, z)`` is ``obs[1:5]``."""

    def __init__(self, env: gym.Env, *, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__(env, sharpness=sharpness)
        env = env.unwrapped
        self.include_cfrc_ext = bool(_read(env, "_include_cfrc_ext_in_observation"))
        self.contact_cost_weight = float(_read(env, "_contact_cost_weight"))
        n_forces = int(env.data.cfrc_ext[1:].size) if self.include_cfrc_ext else 0
        if self.obs_dim != self.state_dim + n_forces:
            raise ConfigError(
                f"AntTask expects {self.state_dim + n_forces} observation values "
                f"(include_cfrc_ext_in_observation={self.include_cfrc_ext}), the env has "
                f"{self.obs_dim}"
            )
        self.min_upright: float | None = None  # see with_min_upright

    def upright(self, obs: Tensor) -> Tensor:
        """Vertical component of the torso's up axis, the cosine of its tilt: ``[...]``
        (1 upright, 0 on its side, −1 on its back)."""
        q = obs[..., self.quaternion_index : self.quaternion_index + 4].square()  # w, x, y, z
        norm = q.sum(dim=-1).clamp_min(1e-6)  # a predicted quaternion need not be a unit one
        return (q[..., 0] - q[..., 1] - q[..., 2] + q[..., 3]) / norm

    def with_min_upright(self, min_upright: float | None) -> AntTask:
        if min_upright is None:
            return self
        if not -1 < min_upright < 1:
            raise ConfigError(f"min_upright must be in (-1, 1), got {min_upright}")
        task = copy.copy(self)
        task.min_upright = float(min_upright)
        return task

    def health_margin(self, obs: Tensor) -> Tensor:
        margin = range_margin(obs[..., self.z_index], *self.healthy_z_range)
        if self.min_upright is None:
            return margin
        return torch.minimum(margin, self.upright(obs) - self.min_upright)

    def is_healthy(self, obs: Tensor) -> Tensor:
        """The env's exact rule, and with :meth:`with_min_upright` the upright bound too."""
        finite = torch.isfinite(obs[..., : self.state_dim]).all(dim=-1)
        z = obs[..., self.z_index]
        low, high = self.healthy_z_range
        healthy = finite & (low <= z) & (z <= high)
        if self.min_upright is None:
            return healthy
        return healthy & (self.upright(obs) >= self.min_upright)

    def state_cost(self, next_obs: Tensor) -> Tensor:
        if not self.include_cfrc_ext:
            return super().state_cost(next_obs)
        forces = next_obs[..., self.state_dim :]
        return self.contact_cost_weight * forces.square().sum(dim=-1)


class HumanoidTask(_HealthyLocomotionTask):
    """Humanoid-v5: obs ``qpos[2:]`` (z, torso quaternion, 17 joints: 22) then ``qvel`` (23),
    then, each where its ``include_*_in_observation`` flag is set (all are by default), the
    bodies' ``cinert[1:]`` (130), ``cvel[1:]`` (78), ``qfrc_actuator[6:]`` (17) and
    ``cfrc_ext[1:]`` (78): 348 values by default.

    Healthy: ``z_min < z < z_max`` (strict). The env's forward term is the x velocity of the
    whole body's centre of mass, a position difference over the step. Where ``cinert`` and
    ``cvel`` are observed, the surrogate's velocity is that centre of mass's at the next state,
    ``Σ_i m_i (v_i + ω_i × c_i) / Σ_i m_i`` from each body's mass ``m_i``, its offset ``c_i``
    from the centre of mass (``cinert``) and its velocity ``(ω_i, v_i)`` there (``cvel``);
    without them the torso's ``qvel[0]``, a much poorer proxy. Where the contact forces are
    observed it subtracts the env's contact cost ``min(contact_cost_weight·‖cfrc_ext‖², high)``
    exactly (the world body's row is always zero). No ``true_reward``.
    """

    env_id = "Humanoid-v5"
    skipped_qpos = 2
    z_index = 0
    BLOCKS = (
        ("_include_cinert_in_observation", "cinert", 10),
        ("_include_cvel_in_observation", "cvel", 6),
        ("_include_qfrc_actuator_in_observation", "qfrc_actuator", None),
        ("_include_cfrc_ext_in_observation", "cfrc_ext", 6),
    )

    def __init__(self, env: gym.Env, *, sharpness: float = DEFAULT_SHARPNESS) -> None:
        super().__init__(env, sharpness=sharpness)
        env = env.unwrapped
        sizes = {
            name: (int(getattr(env.data, name)[1:].size) if width else self.nv - 6)
            if bool(_read(env, flag))
            else 0
            for flag, name, width in self.BLOCKS
        }
        if self.obs_dim != self.state_dim + sum(sizes.values()):
            raise ConfigError(
                f"HumanoidTask expects {self.state_dim + sum(sizes.values())} observation values "
                f"(qpos[2:], qvel and the included blocks {sizes}), the env has {self.obs_dim}"
            )
        self.contact_slice = (
            slice(self.obs_dim - sizes["cfrc_ext"], self.obs_dim) if sizes["cfrc_ext"] else None
        )
        self.num_bodies = int(env.model.nbody) - 1
        self.inertia_start = self.state_dim if sizes["cinert"] and sizes["cvel"] else None
        """Where ``cinert[1:]`` begins (``cvel[1:]`` follows it), or None without them."""
        self.contact_cost_weight = float(_read(env, "_contact_cost_weight"))
        self.contact_cost_high = float(_read(env, "_contact_cost_range")[1])

    def forward_velocity(self, obs: Tensor) -> Tensor:
        """The centre of mass's x velocity (see the class docstring): ``[..., S] -> [...]``."""
        if self.inertia_start is None:
            return super().forward_velocity(obs)
        n, start = self.num_bodies, self.inertia_start
        inertia = obs[..., start : start + 10 * n].unflatten(-1, (n, 10))
        velocity = obs[..., start + 10 * n : start + 16 * n].unflatten(-1, (n, 6))
        mass = inertia[..., 9]
        offset = inertia[..., 6:9] / mass.clamp_min(1e-6)[..., None]
        angular, linear = velocity[..., :3], velocity[..., 3:]
        body_x = (
            linear[..., 0] + angular[..., 1] * offset[..., 2] - angular[..., 2] * offset[..., 1]
        )
        return (mass * body_x).sum(-1) / mass.sum(-1).clamp_min(1e-6)

    def health_margin(self, obs: Tensor) -> Tensor:
        return range_margin(obs[..., self.z_index], *self.healthy_z_range)

    def is_healthy(self, obs: Tensor) -> Tensor:
        return _in_open_range(obs[..., self.z_index], *self.healthy_z_range)

    def state_cost(self, next_obs: Tensor) -> Tensor:
        if self.contact_slice is None:
            return super().state_cost(next_obs)
        forces = next_obs[..., self.contact_slice]
        cost = self.contact_cost_weight * forces.square().sum(dim=-1)
        return cost.clamp(max=self.contact_cost_high)


register(InvertedPendulumTask.env_id, InvertedPendulumTask)
register(HopperTask.env_id, HopperTask)
register(Walker2dTask.env_id, Walker2dTask)
register(AntTask.env_id, AntTask)
register(HalfCheetahTask.env_id, HalfCheetahTask)
register(HumanoidTask.env_id, HumanoidTask)
