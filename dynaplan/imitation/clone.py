"""Behaviour cloning and DAgger of a run's MPC controller into an SB3 PPO policy.

``bc`` regresses the policy on the (obs, MPC action) pairs a ``dynaplan train`` run
collected (its random seed data excluded). ``dagger`` then alternates: roll out the current
policy in the real env, label the visited states with the run's MPC agent (its latest model),
aggregate, refit (Ross et al., 2011, with β = 0 after the first round).

A clone folder holds ``policy.zip`` (loads with ``stable_baselines3.PPO.load``) and
``clone.json`` (settings, data sizes, fit losses, the clone's and the expert's returns).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dynaplan.agents.baselines import SB3Agent
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.evaluation import EvalResult, evaluate, evaluation_seed
from dynaplan.imitation.policy import POLICY_FILE, FitStats, fit_actor, new_ppo
from dynaplan.rundir import RunDir, last_evaluation
from dynaplan.types import Agent

METHODS = ("bc", "dagger")
REPORT_FILE = "clone.json"


@dataclass
class CloneConfig:
    """How to clone an MPC run into a policy."""

    method: str = "bc"
    """bc (regression on the run's MPC data) or dagger (bc, then rounds of relabelling)."""
    epochs: int = 300
    """Most training epochs per fit (early stopping usually ends sooner)."""
    batch_size: int = 256
    """(obs, action) pairs per Adam step."""
    lr: float = 1e-3
    """Adam step size."""
    val_fraction: float = 0.1
    """Share of the pairs held out for early stopping."""
    patience: int = 20
    """Stop after this many epochs without a better validation loss."""
    dagger_rounds: int = 5
    """dagger: rounds of roll out, relabel with MPC, refit."""
    dagger_steps: int = 1000
    """dagger: env steps the policy visits (and MPC labels) per round."""
    eval_episodes: int = 5
    """Deterministic evaluation episodes of the clone (and of each DAgger round)."""
    expert_episodes: int = 0
    """Also evaluate the MPC expert on the same episodes (costs planning time)."""
    seed: int = 0
    """Seeds the policy's initialisation, its minibatches, DAgger's and the evaluation episodes."""
    device: str = "cpu"
    """Where the planner runs when DAgger labels states (the policy trains on the CPU)."""
    threads: int = 1
    """CPU threads for torch (0 keeps torch's default)."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> CloneConfig:
        """Raise ConfigError on the first bad value; returns self."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown clone method {self.method!r}; choose one of {METHODS}")
        for name in ("epochs", "batch_size", "patience", "dagger_steps", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dagger_rounds < 0 or self.expert_episodes < 0 or self.threads < 0:
            raise ConfigError("dagger_rounds, expert_episodes and threads must be >= 0")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        return self


@dataclass
class CloneResult:
    """What ``clone`` leaves in its folder, as written to ``clone.json``."""

    policy_dir: Path
    report: dict[str, Any]

    @property
    def clone_return(self) -> float:
        return self.report["clone"]["return_mean"]


def mpc_demonstrations(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(obs [N, S], actions [N, A])`` of a run's MPC-collected transitions (no random data)."""
    run = RunDir(run_dir)
    if not (run.config.is_file() and run.journal.is_file()):
        raise CheckpointError(
            f"{run.path} is not a dynaplan train run with collected data (needs "
            f"{run.config.name} and {run.journal.name}); check the path"
        )
    config = TrainConfig.load(run.config)
    env = make_env(config.env, **config.env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    buffer = ReplayBuffer.from_journal(run.journal, obs_dim, act_dim)
    obs, actions = buffer.obs[config.random_steps :], buffer.action[config.random_steps :]
    if len(obs) < 2:
        raise ConfigError(
            f"{run.path} has no MPC-collected transitions yet (only {len(buffer)} random ones); "
            "train it further first"
        )
    return obs.copy(), actions.copy()


def clone(run_dir: str | Path, out: str | Path, config: CloneConfig) -> CloneResult:
    """Clone the MPC controller of ``run_dir`` into ``out/policy.zip``; see the module doc."""
    config.validate()
    out = Path(out)
    if (out / POLICY_FILE).exists():
        raise CheckpointError(f"{out} already holds a clone; choose another --out")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    obs, actions = mpc_demonstrations(run_dir)
    run_config = TrainConfig.load(RunDir(run_dir).config)
    env = make_env(run_config.env, **run_config.env_kwargs)
    scale = (env.action_space.high - env.action_space.low) / 2
    rng = np.random.default_rng(config.seed)
    model = new_ppo(env, config.seed)
    fit_kwargs = dict(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        val_fraction=config.val_fraction,
        patience=config.patience,
        progress=config.progress,
    )
    fit = fit_actor(model.policy, obs, actions, scale, rng, **fit_kwargs)
    policy = SB3Agent(model)
    rounds = [_round_report(0, len(obs), fit, _evaluate(policy, run_config, config))]
    if config.method == "dagger":
        expert, _ = load_mpc_agent(run_dir, config.device)
        bar = tqdm(range(1, config.dagger_rounds + 1), desc="dagger", disable=not config.progress)
        for round_ in bar:
            visited = _visit(policy, env, config.dagger_steps, config.seed + 1000 * round_)
            obs = np.concatenate([obs, visited])
            actions = np.concatenate([actions, _label(expert, visited)])
            fit = fit_actor(model.policy, obs, actions, scale, rng, **fit_kwargs)
            result = _evaluate(policy, run_config, config)
            rounds.append(_round_report(round_, len(obs), fit, result))
            bar.set_postfix(pairs=len(obs), ret=f"{result.mean:.1f}")
    env.close()
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / POLICY_FILE)
    report = {
        "source_run": str(run_dir),
        "env": run_config.env,
        "env_kwargs": run_config.env_kwargs,
        "config": dataclasses.asdict(config),
        "pairs": len(obs),
        "rounds": rounds,
        "clone": rounds[-1]["eval"],
        "expert": _expert_report(run_dir, run_config, config),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return CloneResult(out, report)


def _visit(policy: Agent, env: gym.Env, steps: int, seed: int) -> np.ndarray:
    """Observations ``[steps, S]`` the deterministic ``policy`` visits, over fresh episodes."""
    visited, episode = [], 0
    obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    while len(visited) < steps:
        visited.append(obs)
        obs, _, terminated, truncated, _ = env.step(np.clip(policy.act(obs), low, high))
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return np.asarray(visited, np.float32)


def _label(expert: Agent, visited: np.ndarray) -> np.ndarray:
    """The expert's action for each visited observation, its warm start kept along the rows."""
    expert.reset()
    return np.asarray([expert.act(obs) for obs in visited], np.float32)


def _evaluate(agent: Agent, run_config: TrainConfig, config: CloneConfig) -> EvalResult:
    env = make_env(run_config.env, **run_config.env_kwargs)
    try:
        return evaluate(agent, env, config.eval_episodes, evaluation_seed(config.seed, 0))
    finally:
        env.close()


def _round_report(round_: int, pairs: int, fit: FitStats, result: EvalResult) -> dict[str, Any]:
    return {
        "round": round_,
        "pairs": pairs,
        "fit": dataclasses.asdict(fit),
        "eval": {"return_mean": result.mean, "return_std": result.std, "returns": result.returns},
    }


def _expert_report(run_dir: str | Path, run_config: TrainConfig, config: CloneConfig) -> dict:
    """The run's last recorded evaluation, and (optionally) the expert on the clone's episodes."""
    rows = RunDir(run_dir).read_metrics()
    last = last_evaluation(rows)
    report: dict[str, Any] = {"last_run_eval": last["eval_return_mean"] if last else None}
    if config.expert_episodes > 0:
        expert, _ = load_mpc_agent(run_dir, config.device)
        episodes = dataclasses.replace(config, eval_episodes=config.expert_episodes)
        result = _evaluate(expert, run_config, episodes)
        report.update(return_mean=result.mean, return_std=result.std, returns=result.returns)
    return report
