"""The built-in MuJoCo tasks against real Gymnasium v5 rollouts.

Each env configuration is rolled out with three behaviours (uniform random actions, zero
actions and a noisy sinusoidal gait), fixed seeds, and the tasks are checked against what the
env itself reported: termination flags, rewards, and the reward's parts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from mujoco import mj_kinematics

from dynaplan import tasks
from dynaplan.errors import ConfigError
from dynaplan.tasks import mujoco, registry
from dynaplan.tasks.base import Task

# name -> (env id, gym.make kwargs)
CONFIGS: dict[str, tuple[str, dict[str, object]]] = {
    "InvertedPendulum": ("InvertedPendulum-v5", {}),
    "Hopper": ("Hopper-v5", {}),
    "Walker2d": ("Walker2d-v5", {}),
    "Ant105": ("Ant-v5", {}),
    "Ant27": ("Ant-v5", {"include_cfrc_ext_in_observation": False}),
    "HalfCheetah": ("HalfCheetah-v5", {}),
    "Humanoid": ("Humanoid-v5", {}),
}
LOCOMOTION = ["Hopper", "Walker2d", "Ant105", "Ant27", "HalfCheetah", "Humanoid"]
WITH_HEALTH = ["Hopper", "Walker2d", "Ant105", "Ant27", "Humanoid"]
MUST_TERMINATE = ["InvertedPendulum", "Hopper", "Walker2d", "Humanoid"]
EXACT_REWARD = ["InvertedPendulum"]
POLICIES = ("random", "zero", "gait")
STEPS_PER_POLICY = 1500
WINDOW = 20
MIN_CORRELATION = 0.8


@dataclass
class Rollout:
    """Transitions of one env under one behaviour; ``done`` marks episode ends (term or trunc)."""

    obs: np.ndarray
    act: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    done: np.ndarray
    x_velocity: np.ndarray  # the env's info["x_velocity"], NaN where it has none

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(self.obs),
            torch.from_numpy(self.act),
            torch.from_numpy(self.next_obs),
        )


def _make(name: str) -> gym.Env:
    env_id, kwargs = CONFIGS[name]
    return gym.make(env_id, **kwargs)


def _task(name: str) -> Task:
    env = _make(name)
    try:
        return tasks.get(CONFIGS[name][0], env)
    finally:
        env.close()


def _collect(name: str, policy: str, seed: int) -> Rollout:
    env = _make(name)
    rng = np.random.default_rng(seed)
    space = env.action_space
    assert isinstance(space, gym.spaces.Box)
    low, high = space.low, space.high
    obs, _ = env.reset(seed=seed)
    rows: dict[str, list] = {k: [] for k in Rollout.__dataclass_fields__}
    t, period, phase = 0, 20.0, rng.uniform(0, 2 * math.pi, size=low.shape)
    for _ in range(STEPS_PER_POLICY):
        if policy == "random":
            act = rng.uniform(low, high)
        elif policy == "zero":
            act = np.zeros_like(low)
        else:
            wave = np.sin(2 * math.pi * t / period + phase)
            act = np.clip(
                0.7 * high * wave + 0.3 * high * rng.standard_normal(low.shape), low, high
            )
        next_obs, reward, terminated, truncated, info = env.step(act)
        for key, value in (
            ("obs", obs),
            ("act", act),
            ("reward", reward),
            ("next_obs", next_obs),
            ("terminated", terminated),
            ("done", terminated or truncated),
            ("x_velocity", info.get("x_velocity", math.nan)),
        ):
            rows[key].append(value)
        obs, t = next_obs, t + 1
        if terminated or truncated:
            obs, _ = env.reset()
            t, period = 0, rng.uniform(8.0, 40.0)
            phase = rng.uniform(0, 2 * math.pi, size=low.shape)
    env.close()
    rows["done"][-1] = True  # the last, unfinished episode ends here
    return Rollout(**{k: np.asarray(v) for k, v in rows.items()})


@pytest.fixture(scope="module")
def rollouts() -> Callable[[str], dict[str, Rollout]]:
    """Per env configuration: its rollouts under each behaviour, collected once, on demand."""
    cache: dict[str, dict[str, Rollout]] = {}

    def get(name: str) -> dict[str, Rollout]:
        if name not in cache:
            cache[name] = {
                policy: _collect(name, policy, seed=1000 * i + 7)
                for i, policy in enumerate(POLICIES)
            }
        return cache[name]

    return get


def _windows(done: np.ndarray, length: int) -> list[slice]:
    """Consecutive non-overlapping windows of ``length`` steps inside each episode."""
    windows, start = [], 0
    for end in np.flatnonzero(done) + 1:
        windows += [slice(s, s + length) for s in range(start, end - length + 1, length)]
        start = end
    return windows


def window_returns(task: Task, data: Rollout) -> tuple[np.ndarray, np.ndarray]:
    """(surrogate, env) returns summed over 20-step windows within episodes."""
    with torch.no_grad():
        surrogate = task.reward(*data.tensors()).numpy()
    windows = _windows(data.done, WINDOW)
    return (
        np.array([surrogate[w].sum() for w in windows]),
        np.array([data.reward[w].sum() for w in windows]),
    )


def pooled_correlation(task: Task, runs: dict[str, Rollout]) -> tuple[float, int]:
    pairs = [window_returns(task, data) for data in runs.values()]
    surrogate = np.concatenate([s for s, _ in pairs])
    true = np.concatenate([r for _, r in pairs])
    return float(np.corrcoef(surrogate, true)[0, 1]), len(true)


# --- termination -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_terminated_matches_env_on_every_transition(name, rollouts):
    task = _task(name)
    for policy, data in rollouts(name).items():
        predicted = task.terminated(torch.from_numpy(data.next_obs)).numpy()
        assert predicted.dtype == np.bool_
        mismatches = np.flatnonzero(predicted != data.terminated)
        assert mismatches.size == 0, (
            f"{name}/{policy}: {mismatches.size} of {len(predicted)} transitions disagree, "
            f"first at {mismatches[:5]}"
        )
    if name in MUST_TERMINATE:
        n_terminations = sum(int(d.terminated.sum()) for d in rollouts(name).values())
        assert n_terminations >= 20, f"{name}: only {n_terminations} terminations collected"
        assert rollouts(name)["random"].terminated.any()


@pytest.mark.parametrize("name", ["Hopper", "Walker2d"])
def test_terminated_follows_terminate_when_unhealthy(name):
    env_id, kwargs = CONFIGS[name]
    env = gym.make(env_id, **kwargs, terminate_when_unhealthy=False)
    task = tasks.get(env_id, env)
    env.close()
    fallen = torch.zeros(3, env.observation_space.shape[0], dtype=torch.float64)
    assert not task.terminated(fallen).any()
    assert _task(name).terminated(fallen).all()


# --- the env's reward --------------------------------------------------------------------


def test_true_reward_availability():
    for name in CONFIGS:
        assert _task(name).has_true_reward == (name in EXACT_REWARD), name
    with pytest.raises(NotImplementedError):
        _task("Hopper").true_reward(*(torch.zeros(1, 11),) * 3)


@pytest.mark.parametrize("name", EXACT_REWARD)
def test_true_reward_matches_env(name, rollouts):
    task = _task(name)
    for policy, data in rollouts(name).items():
        reward = task.true_reward(*data.tensors())
        assert reward.dtype == torch.float64
        np.testing.assert_allclose(reward.numpy(), data.reward, atol=1e-5, err_msg=policy)


@pytest.mark.parametrize("name", [n for n in LOCOMOTION if n != "Humanoid"])
def test_forward_velocity_is_an_inexact_proxy(name, rollouts):
    """``vx`` is the obs entry nearest the env's ``(x' − x)/dt``, yet not equal to it.

    This is why the locomotion tasks leave ``true_reward`` out.
    """
    task = _task(name)
    data = rollouts(name)["random"]
    error = np.abs(data.next_obs - data.x_velocity[:, None]).mean(axis=0)
    assert int(error.argmin()) == task.vx_index
    assert np.abs(data.next_obs[:, task.vx_index] - data.x_velocity).max() > 1e-3


def test_humanoid_velocity_is_its_centre_of_mass_not_its_torso(rollouts):
    """The env pays the centre of mass's velocity; the torso's qvel[0] barely follows it."""
    task = _task("Humanoid")
    for policy, data in rollouts("Humanoid").items():
        next_obs = torch.from_numpy(data.next_obs)
        com = task.forward_velocity(next_obs).numpy()
        assert np.corrcoef(com, data.x_velocity)[0, 1] > 0.98, policy
        assert np.abs(com - data.x_velocity).mean() < 0.05, policy
        assert np.abs(com - data.x_velocity).max() > 1e-4, policy  # a proxy all the same
        torso = data.next_obs[:, task.vx_index]
        assert np.abs(torso - data.x_velocity).mean() > 5 * np.abs(com - data.x_velocity).mean()


@pytest.mark.parametrize("name", LOCOMOTION)
def test_reward_apart_from_forward_term_is_exact(name, rollouts):
    """Env reward − forward_reward_weight·(x' − x)/dt is reproduced exactly from observations.

    Checks the health rule, control cost and (Ant) contact cost indices against the env.
    Without observed contact forces (Ant27) only the contact cost is left unexplained.
    """
    task = _task(name)
    for policy, data in rollouts(name).items():
        _, act, next_obs = data.tensors()
        expected = data.reward - task.forward_reward_weight * data.x_velocity
        got = -mujoco.control_cost(act, task.ctrl_cost_weight)
        if isinstance(task, mujoco._HealthyLocomotionTask):
            got = got + task.healthy_reward * task.is_healthy(next_obs) - task.state_cost(next_obs)
        got = got.numpy()
        if name == "Ant27":
            contact_cost = got - expected
            assert (contact_cost > -1e-12).all() and (contact_cost > 0).any()
            assert contact_cost.max() <= task.contact_cost_weight * 14 * 6
        else:
            np.testing.assert_allclose(got, expected, atol=1e-9, err_msg=policy)


@pytest.mark.parametrize("name", [n for n in WITH_HEALTH if n != "Ant27"])
def test_hard_health_is_the_envs_reward_but_for_the_forward_proxy(name, rollouts):
    task = _task(name).with_hard_health(True)
    assert _task(name).with_hard_health(False).hard_health is False
    for policy, data in rollouts(name).items():
        obs, act, next_obs = data.tensors()
        with torch.no_grad():
            reward = task.reward(obs, act, next_obs)
            forward = task.forward_reward_weight * task.forward_velocity(next_obs)
        expected = data.reward - task.forward_reward_weight * data.x_velocity
        np.testing.assert_allclose((reward - forward).numpy(), expected, atol=1e-9, err_msg=policy)


def test_hard_health_leaves_a_task_without_a_healthy_bonus_as_it_is():
    task = _task("HalfCheetah")
    assert task.with_hard_health(True) is task


# --- the surrogate -----------------------------------------------------------------------


def test_humanoid_surrogate_is_the_env_reward_away_from_its_bounds(rollouts):
    """Humanoid falls within about 25 steps under every behaviour here, so its 20-step window
    returns hardly vary (90-99) and their correlation says little: compare steps instead."""
    task = _task("Humanoid")
    for policy, data in rollouts("Humanoid").items():
        with torch.no_grad():
            surrogate = task.reward(*data.tensors()).numpy()
            inside = task.health_margin(torch.from_numpy(data.next_obs)).numpy() > 0.25
        assert inside.sum() > 100, policy
        error = np.abs(surrogate - data.reward)[inside]
        assert error.mean() < 0.1 and np.percentile(error, 95) < 0.3, (policy, error.mean())


@pytest.mark.parametrize("name", [n for n in WITH_HEALTH if n != "Humanoid"])
def test_surrogate_return_correlates_with_env_return(name, rollouts):
    """Pooled over the behaviours, and within each one.

    Pooled alone is too lenient: on Ant the control cost gap between zero and random actions
    carries the pooled correlation past 0.8 even with ``vx`` read from the wrong index.
    """
    task = _task(name)
    correlation, n_windows = pooled_correlation(task, rollouts(name))
    assert n_windows >= 50, n_windows
    assert correlation >= MIN_CORRELATION, f"{name}: Pearson {correlation:.3f} over {n_windows}"
    for policy, data in rollouts(name).items():
        surrogate, true = window_returns(task, data)
        assert len(true) >= 10, (policy, len(true))
        within = float(np.corrcoef(surrogate, true)[0, 1])
        assert within >= MIN_CORRELATION, f"{name}/{policy}: Pearson {within:.3f}"


def test_ant_contact_cost_only_with_observed_forces(rollouts):
    ant105, ant27 = _task("Ant105"), _task("Ant27")
    assert (ant105.obs_dim, ant27.obs_dim) == (105, 27)
    assert ant105.include_cfrc_ext and not ant27.include_cfrc_ext
    next_obs = torch.from_numpy(rollouts("Ant105")["random"].next_obs)
    assert (ant105.state_cost(next_obs) > 0).any()
    assert not ant27.state_cost(next_obs[:, :27]).any()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_surrogate_gradients_through_a_toy_model(name, rollouts):
    task = _task(name)
    data = rollouts(name)["random"]
    obs = torch.from_numpy(data.obs[:64])
    generator = torch.Generator().manual_seed(0)
    n_act, n_obs = data.act.shape[1], obs.shape[1]
    # dense, so that every action reaches every observation (z, angle, vx, forces)
    weight = 0.3 * torch.randn(n_act, n_obs, generator=generator, dtype=torch.float64)
    act = torch.from_numpy(data.act[:64]).requires_grad_(True)
    next_obs = obs + torch.tanh(act @ weight)
    task.reward(obs, act, next_obs).sum().backward()
    assert act.grad is not None
    assert torch.isfinite(act.grad).all()
    assert (act.grad != 0).any()


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_leading_shape_and_dtype(name, dtype, rollouts):
    task = _task(name)
    data = rollouts(name)["zero"]
    obs, act, next_obs = (x[:24].reshape(2, 3, 4, -1).to(dtype) for x in data.tensors())
    reward = task.reward(obs, act, next_obs)
    assert reward.shape == (2, 3, 4) and reward.dtype == dtype
    flat = task.reward(obs.reshape(24, -1), act.reshape(24, -1), next_obs.reshape(24, -1))
    torch.testing.assert_close(reward.reshape(24), flat)
    terminated = task.terminated(next_obs)
    assert terminated.shape == (2, 3, 4) and terminated.dtype == torch.bool
    if task.has_true_reward:
        assert task.true_reward(obs, act, next_obs).shape == (2, 3, 4)


def test_half_cheetah_reward_is_forward_velocity_minus_control():
    task = _task("HalfCheetah")
    obs = torch.zeros(2, 17, dtype=torch.float64)
    next_obs = obs.clone()
    next_obs[:, 8] = torch.tensor([1.5, -2.0], dtype=torch.float64)
    act = torch.full((2, 6), 0.5, dtype=torch.float64)
    expected = next_obs[:, 8] - 0.1 * 6 * 0.25
    torch.testing.assert_close(task.reward(obs, act, next_obs), expected)
    assert not task.terminated(next_obs).any()


def test_soft_health_sign_and_margin():
    x = torch.tensor([0.5, 0.75, 1.5, 3.0], dtype=torch.float64)
    margin = mujoco.range_margin(x, 0.7, 2.0)
    torch.testing.assert_close(margin, torch.tensor([-0.2, 0.05, 0.5, -1.0], dtype=torch.float64))
    assert torch.isinf(mujoco.range_margin(x, -math.inf, math.inf)).all()
    health = mujoco.soft_health(margin, 20.0)
    assert health[0] < 0 < health[1] < health[2] and health[3] < 0


def test_safety_margin_pulls_the_healthy_ranges_in():
    task = _task("Hopper")
    safe = task.with_safety_margin(0.03)
    obs = torch.zeros(3, task.obs_dim)
    obs[:, 0] = 1.25  # z well inside (0.7, inf)
    obs[:, 1] = torch.tensor([0.0, 0.18, 0.21])  # torso angle; the env's range is (-0.2, 0.2)
    act = torch.zeros(3, 3)
    assert task.terminated(obs).tolist() == [False, False, True]
    assert safe.terminated(obs).tolist() == [False, True, True]
    exact, shrunk = task.reward(obs, act, obs), safe.reward(obs, act, obs)
    assert shrunk[1] < 0 < exact[1]  # 0.02 inside the exact range, 0.01 outside the shrunk one
    torch.testing.assert_close(shrunk[0], exact[0], atol=0.01, rtol=0)  # far inside: the same
    assert task.safety_margin == 0 and safe.healthy_angle_range == task.healthy_angle_range


@pytest.mark.parametrize("name", WITH_HEALTH)
def test_every_task_with_healthy_ranges_takes_a_margin(name):
    task = _task(name)
    assert task.has_healthy_ranges and task.with_safety_margin(0.05).safety_margin == 0.05
    with pytest.raises(ConfigError, match=">= 0"):
        task.with_safety_margin(-0.1)


@pytest.mark.parametrize("name", ["InvertedPendulum", "HalfCheetah"])
def test_a_margin_needs_healthy_ranges(name):
    task = _task(name)
    assert not task.has_healthy_ranges and task.with_safety_margin(0) is task
    with pytest.raises(ConfigError, match=r"policy\.safety_margin\) must be 0"):
        task.with_safety_margin(0.03)


@pytest.mark.parametrize("name", WITH_HEALTH)
def test_the_soft_continuation_follows_the_exact_one(name, rollouts):
    task = _task(name)
    felt = task.with_termination_gradient(True)
    assert task.with_termination_gradient(False) is task
    assert felt.termination_gradient and not task.termination_gradient
    data = np.concatenate([d.next_obs for d in rollouts(name).values()])  # some terminate
    next_obs = torch.as_tensor(data, dtype=torch.float32).requires_grad_()
    exact = task.continuation(next_obs)
    assert not exact.requires_grad  # a 0/1 mask: no gradient
    assert 0 < exact.mean() < 1  # both kinds of step are there
    soft = felt.soft_continuation(next_obs)
    assert ((soft > 0.5) == exact.bool()).float().mean() > 0.99  # on the boundary: either
    soft.sum().backward()
    assert next_obs.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["InvertedPendulum", "HalfCheetah"])
def test_a_termination_gradient_needs_healthy_ranges(name):
    task = _task(name)
    assert task.with_termination_gradient(False) is task
    with pytest.raises(ConfigError, match="termination_gradient must be off"):
        task.with_termination_gradient(True)


def test_upright_is_the_cosine_of_the_torso_tilt():
    env = _make("Ant27")
    task = tasks.get(CONFIGS["Ant27"][0], env)
    env.action_space.seed(2)
    obs, _ = env.reset(seed=2)
    uprights, cosines = [], []
    for _ in range(400):  # random actions: this seed's ant turns over onto its back
        obs, *_ = env.step(env.action_space.sample())
        uprights.append(float(task.upright(torch.from_numpy(obs))))
        model, data = env.unwrapped.model, env.unwrapped.data
        mj_kinematics(model, data)  # mj_step leaves xmat one substep behind qpos
        cosines.append(float(data.xmat[1][8]))  # the torso frame's z-z entry
    env.close()
    np.testing.assert_allclose(uprights, cosines, atol=1e-6)
    assert min(cosines) < 0 < max(cosines)


def test_min_upright_makes_a_flipped_ant_unhealthy():
    task = _task("Ant27")
    upright = task.with_min_upright(0.0)
    obs = torch.zeros(2, task.obs_dim)
    obs[:, 0] = 0.55  # torso height inside the env's range (0.2, 1.0)
    obs[0, 1] = 1.0  # quaternion (1, 0, 0, 0): upright
    obs[1, 2] = 1.0  # (0, 1, 0, 0): turned over about x, on its back
    act = torch.zeros(2, 8)
    assert task.terminated(obs).tolist() == [False, False]  # the env plays on
    assert upright.terminated(obs).tolist() == [False, True]
    exact, bounded = task.reward(obs, act, obs), upright.reward(obs, act, obs)
    torch.testing.assert_close(bounded[0], exact[0])  # upright: the same
    assert bounded[1] < 0 < exact[1]
    zero = torch.zeros(task.obs_dim, requires_grad=True)  # a model may predict any quaternion
    upright.reward(zero, act[0], zero).backward()
    assert torch.isfinite(zero.grad).all()
    assert task.min_upright is None and task.with_min_upright(None) is task
    with pytest.raises(ConfigError, match=r"\(-1, 1\)"):
        task.with_min_upright(-1.0)


@pytest.mark.parametrize("name", ["Hopper", "HalfCheetah", "InvertedPendulum"])
def test_an_upright_bound_needs_a_free_torso(name):
    task = _task(name)
    assert task.with_min_upright(None) is task
    with pytest.raises(ConfigError, match="no free torso"):
        task.with_min_upright(0.0)


# --- construction and the registry -------------------------------------------------------


def test_constants_are_read_from_the_env():
    env = gym.make(
        "Hopper-v5",
        healthy_z_range=(0.5, 3.0),
        healthy_angle_range=(-0.3, 0.4),
        ctrl_cost_weight=0.01,
        forward_reward_weight=2.0,
        healthy_reward=0.5,
    )
    task = tasks.get("Hopper-v5", env)
    assert task.dt == env.unwrapped.dt
    env.close()
    assert task.healthy_z_range == (0.5, 3.0) and task.healthy_angle_range == (-0.3, 0.4)
    assert (task.ctrl_cost_weight, task.forward_reward_weight, task.healthy_reward) == (
        0.01,
        2.0,
        0.5,
    )


@pytest.mark.parametrize("name", LOCOMOTION)
def test_unsupported_observation_layout_is_a_config_error(name):
    env_id, kwargs = CONFIGS[name]
    env = gym.make(env_id, **kwargs, exclude_current_positions_from_observation=False)
    with pytest.raises(ConfigError, match="exclude_current_positions_from_observation"):
        tasks.get(env_id, env)
    env.close()


def test_wrong_env_for_a_task_is_a_config_error():
    env = gym.make("InvertedPendulum-v5")
    with pytest.raises(ConfigError, match="has no attribute"):
        mujoco.HopperTask(env)
    env.close()


def test_builtin_ids_are_registered():
    assert {env_id for env_id, _ in CONFIGS.values()} <= set(tasks.registered())


def test_unknown_id_lists_known_ids_and_register():
    with pytest.raises(ConfigError) as info:
        tasks.get("Nope-v0")
    message = str(info.value)
    assert "Nope-v0" in message and "register" in message
    for env_id in (
        "Hopper-v5",
        "Walker2d-v5",
        "Ant-v5",
        "HalfCheetah-v5",
        "InvertedPendulum-v5",
        "Humanoid-v5",
    ):
        assert env_id in message


def test_register_and_get_round_trip(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def reward(obs, act, next_obs):
        return -next_obs.square().sum(-1)

    task = Task.from_functions(reward, lambda next_obs: next_obs[..., 0] > 1, env_id="Mine-v0")
    tasks.register("Mine-v0", task)
    assert tasks.get("Mine-v0") is task
    assert "Mine-v0" in tasks.registered()
    next_obs = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    assert task.terminated(next_obs).tolist() == [True, False]
    torch.testing.assert_close(task.reward(next_obs, None, next_obs), torch.tensor([-4.0, -1.25]))
    assert not task.has_true_reward
    with pytest.raises(ConfigError, match="overwrite"):
        tasks.register("Mine-v0", task)


@pytest.mark.parametrize("entry", [42, "HopperTask", dict, object()])
def test_register_refuses_what_is_neither_a_task_nor_a_factory(monkeypatch, entry):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    with pytest.raises(ConfigError, match="takes a dynaplan Task"):
        tasks.register("Mine-v1", entry)
    assert "Mine-v1" not in tasks.registered()
    tasks.register("Mine-v1", mujoco.HopperTask)  # a Task subclass is a factory
    tasks.register("Mine-v2", lambda env: Task.from_functions(lambda o, a, n: n.sum(-1)))
