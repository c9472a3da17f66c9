"""Building the MPC agent a :class:`TrainConfig` describes, fresh or from a run folder."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from dynaplan import tasks
from dynaplan.actor_critic import ActorCriticTrainer, GaussianActor, QEnsemble, SoftValue
from dynaplan.agents.mpc import MPCAgent
from dynaplan.config import ModelConfig, TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.lqr import LQRValue
from dynaplan.models import DynamicsModel
from dynaplan.planners import make_planner
from dynaplan.policy import PolicyPrior, PolicyTrainer
from dynaplan.rundir import RunDir
from dynaplan.tasks import Task
from dynaplan.types import PolicyKind, ValueKind
from dynaplan.values import ValueEnsemble


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for a missing device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available; use cpu or auto")
    return device


def build_model(config: TrainConfig, obs_dim: int, act_dim: int) -> DynamicsModel:
    """The (untrained) dynamics model that ``config.model`` names."""
    return build_dynamics(config.model, config.dynamics, obs_dim, act_dim)


def build_dynamics(kind: str, m: ModelConfig, obs_dim: int, act_dim: int) -> DynamicsModel:
    """An (untrained) dynamics model of ``kind`` (one of ``MODEL_KINDS``) sized by ``m``."""
    return DynamicsModel(
        obs_dim,
        act_dim,
        ensemble_size=1 if kind == "mlp" else m.ensemble_size,
        hidden_size=m.hidden_size,
        num_layers=m.num_layers,
        activation=m.activation,
        probabilistic=kind == "pets",
        num_elites=None if kind == "mlp" else m.num_elites,
    )


def build_mpc_agent(config: TrainConfig, env: gym.Env, device: torch.device) -> MPCAgent:
    """An MPC agent with a fresh model, the task of ``config.env`` and the configured planner;
    with ``value.enabled`` also a fresh terminal value (``value.kind``), with
    ``policy.enabled`` a fresh :class:`PolicyPrior` proposing plans."""
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    model = build_model(config, obs_dim, act_dim).to(device)
    task = tasks.get(config.env, env)
    policy = build_policy(config, env).to(device) if config.policy.enabled else None
    value: nn.Module | None = None
    if config.value.enabled:
        value = build_value(config, obs_dim, task).to(device)
    elif isinstance(policy, GaussianActor):  # its soft value ends the plans
        p = config.policy
        critic = QEnsemble(
            obs_dim,
            act_dim,
            p.critics,
            p.hidden_size,
            p.num_layers,
            normalize_obs=p.normalize_obs,
            layer_norm=p.critic_layer_norm,
            dropout=p.critic_dropout,
        )
        value = SoftValue(critic, policy).to(device)
    planner = make_planner(
        config.planner,
        env.action_space.low,
        env.action_space.high,
        config.horizon,
        config.seed,
        device,
        cuda_graph=config.search.cuda_graph,
        proposal_share=config.policy.share,
        proposal_noise=config.policy.noise,
        **config.search.options(config.planner),
    )
    return MPCAgent(
        model,
        task,
        planner,
        gamma=config.search.gamma,
        particles=config.search.particles,
        propagation=config.search.propagation,
        replan_every=config.search.replan_every,
        compiled=config.search.compile,
        precision=config.search.precision,
        disagreement_penalty=config.search.disagreement_penalty,
        safety_margin=config.search.safety_margin,
        min_upright=config.search.min_upright,
        termination_gradient=config.search.termination_gradient,
        terminal_value=value,
        policy=policy,
    )


def build_value(config: TrainConfig, obs_dim: int, task: Task) -> ValueEnsemble | LQRValue:
    """The (unfitted) terminal value that ``config.value`` describes, for ``task``."""
    v = config.value
    if v.kind == ValueKind.LQR:
        return LQRValue(task, v.gamma)
    return ValueEnsemble(
        obs_dim, v.ensemble_size, v.hidden_size, v.num_layers, pessimism=v.pessimism
    )


def build_policy(config: TrainConfig, env: gym.Env) -> PolicyPrior | GaussianActor:
    """The (untrained) policy prior or actor that ``config.policy`` describes."""
    p = config.policy
    sizes = (env.observation_space.shape[0], env.action_space.low, env.action_space.high)
    if p.kind == PolicyKind.ACTOR_CRITIC:
        return GaussianActor(*sizes, p.hidden_size, p.num_layers, normalize_obs=p.normalize_obs)
    return PolicyPrior(*sizes, p.hidden_size, p.num_layers)


PLANNING_FIELDS = (
    "planner",
    "horizon",
    "search.*",
    "value.enabled",
    "value.pessimism",
    "policy.enabled",
    "policy.share",
    "policy.noise",
)
"""The fields a trained run can be evaluated with changed: how it plans with what it learned
(a trained value or prior can be switched off, not on)."""


def build_policy_trainer(
    config: TrainConfig, agent: MPCAgent
) -> PolicyTrainer | ActorCriticTrainer | None:
    """The trainer of ``agent``'s policy prior (None without one), through its model and value,
    on its task pulled in by ``policy.safety_margin`` and ``policy.min_upright`` (with
    ``policy.termination_gradient``, a termination's cost in the gradient); for an actor,
    its actor-critic trainer."""
    if agent.policy is None:
        return None
    pi = config.policy
    if isinstance(agent.policy, GaussianActor):
        assert isinstance(agent.terminal_value, SoftValue)
        return ActorCriticTrainer(
            agent.policy,
            agent.terminal_value.critic,
            agent.model,
            agent.task.with_hard_health(pi.hard_health),
            horizon=pi.horizon or config.horizon,
            gamma=pi.gamma,
            lr=pi.lr,
            batch_size=pi.batch_size,
            updates_per_step=pi.updates_per_step,
            critic_warmup=pi.critic_warmup,
            rollout_horizon=pi.rollout_horizon,
            rollout_every=pi.rollout_every,
            rollout_states=pi.rollout_states,
        )
    return PolicyTrainer(
        agent.policy,
        agent.model,
        agent.task.with_safety_margin(pi.safety_margin)
        .with_min_upright(pi.min_upright)
        .with_termination_gradient(pi.termination_gradient),
        pi.horizon or config.horizon,
        pi.gamma,
        pi.lr,
        terminal_value=agent.terminal_value,
        check_horizon=pi.check_horizon,
        check_tolerance=pi.check_tolerance,
        check_against_best=pi.check_against_best,
    )


def load_mpc_agent(
    run_dir: str | Path,
    device: str = "auto",
    changes: dict[str, Any] | None = None,
    at_steps: int | None = None,
) -> tuple[MPCAgent, TrainConfig]:
    """The MPC agent of a run folder, with the model (value, prior) of its latest checkpoint,
    or of its snapshot at ``at_steps`` env steps (runs trained with ``snapshots``).

    ``changes`` are dotted :data:`PLANNING_FIELDS` (``{"horizon": 5, "value.enabled":
    False}``) to plan differently with the same learned parts; the config returned has them.
    """
    run = RunDir.open(run_dir)
    config = _with_planning_changes(TrainConfig.load(run.config), changes or {}, run.path)
    env = make_env(config.env, **config.env_kwargs)
    agent = build_mpc_agent(config, env, resolve_device(device))
    checkpoint = run.load_checkpoint(agent.planner.device, at_steps)
    load_learned_parts(agent, checkpoint)
    env.close()
    return agent, config


def load_learned_parts(agent: MPCAgent, checkpoint: dict[str, Any]) -> None:
    """Put a checkpoint's model (value, prior) into ``agent``; a part of another shape is a
    RuntimeError, a missing one a KeyError."""
    agent.model.load_state_dict(checkpoint["model"])
    if agent.terminal_value is not None:
        agent.terminal_value.load_state_dict(checkpoint["value"])
    if agent.policy is not None:
        agent.policy.load_state_dict(checkpoint["policy"])


def _with_planning_changes(
    trained: TrainConfig, changes: dict[str, Any], run_dir: Path
) -> TrainConfig:
    for path in changes:
        if not any(fnmatch(path, field) for field in PLANNING_FIELDS):
            raise ConfigError(
                f"{path} cannot be changed for the trained run {run_dir}: only how it plans "
                f"can ({', '.join(PLANNING_FIELDS)}); train a new run for anything else"
            )
    config = trained.with_fields(changes)
    if not config.value.enabled:  # its weight is the value: without one there is no gradient
        config.search.termination_gradient = config.policy.termination_gradient = False
    config.validate()
    for part in ("value", "policy"):
        if getattr(config, part).enabled and not getattr(trained, part).enabled:
            raise ConfigError(
                f"{run_dir} was trained without a {part}; {part}.enabled can only be "
                "switched off for a trained run"
            )
    return config
