"""Algorithm 1 of the source paper: learn a model from the agent's own data, act by MPC.

    D <- random-action transitions
    for each iteration:
        train the model on D
        collect transitions with MPC (optionally noisy), add them to D
        evaluate MPC without noise on separate episodes

With ``policy.collect`` the policy prior collects instead of MPC (model-based policy learning);
the evaluations report both.

Every transition is journaled as it is collected and a checkpoint is written after
each training round and each iteration, so ``resume`` after a kill loses nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dynaplan import tasks
from dynaplan.actor_critic import ActorCriticTrainer
from dynaplan.agents.factory import (
    build_model,
    build_mpc_agent,
    build_policy_trainer,
    load_learned_parts,
    resolve_device,
)
from dynaplan.agents.mpc import MPCAgent
from dynaplan.analysis.curves import plot_learning_curve
from dynaplan.buffer import ReplayBuffer, journal_prefix
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.evaluation import evaluate, evaluation_seed
from dynaplan.lqr import LQRValue
from dynaplan.models import FitResult, ModelTrainer
from dynaplan.policy import PolicyAgent, PolicyFit
from dynaplan.rundir import MetricsHook, RunDir
from dynaplan.values import ModelExpansion, ValueEnsemble, ValueTrainer


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    metrics: list[dict[str, float]]

    def steps_to_reach(self, threshold: float) -> int | None:
        """Env steps at the first evaluation whose mean return reaches ``threshold``."""
        for row in self.metrics:
            if row["eval_return_mean"] >= threshold:
                return int(row["env_steps"])
        return None


def train(
    config: TrainConfig, run_dir: str | Path, on_metrics: MetricsHook | None = None
) -> RunResult:
    """Start a new run in ``run_dir`` (which must not hold a run yet).

    ``on_metrics`` is called with each evaluated metrics row as it is written (e.g. Ray
    Tune's report).
    """
    config.validate()
    _check_runnable(config)
    with RunDir.create(run_dir) as run:
        config.save(run.config)
        return _run(config, run, checkpoint=None, on_metrics=on_metrics)


def _check_runnable(config: TrainConfig) -> MPCAgent:
    """Fail on a missing device, env, task or package, or a part that cannot be built from the
    config, before the run folder is made; returns the agent built to check it, on the CPU."""
    resolve_device(config.device)
    env = make_env(config.env, **config.env_kwargs)
    try:
        # builds model, planner (its own checks), value, prior and the planning task's bounds
        agent = build_mpc_agent(config, env, torch.device("cpu"))
        build_policy_trainer(config, agent)
        # the prior's bounds even where it is off, and the training episodes' upright bound
        agent.task.with_safety_margin(config.policy.safety_margin)
        agent.task.with_min_upright(config.policy.min_upright)
        agent.task.with_min_upright(config.reset_below_upright)
        agent.task.with_termination_gradient(config.policy.termination_gradient)
    finally:
        env.close()
    if config.tensorboard:
        _summary_writer_class()
    return agent


RESUME_FIELDS = ("total_steps", "device", "threads", "progress", "snapshots")
"""What a resumed run may change: how long it runs, where, how it reports and what it keeps.
Anything else would make it another run than its data and checkpoints come from."""


def resume(
    run_dir: str | Path,
    on_metrics: MetricsHook | None = None,
    changes: dict[str, Any] | None = None,
) -> RunResult:
    """Continue a run from its last checkpoint and journal; ``on_metrics`` as in ``train``.

    ``changes`` set :data:`RESUME_FIELDS` (``{"total_steps": 200_000, "device": "cpu"}``:
    extend a run, or go on without the GPU it began on); they are saved in its config.json.
    """
    changes = changes or {}
    refused = sorted(set(changes) - set(RESUME_FIELDS))
    if refused:
        raise ConfigError(
            f"{', '.join(refused)} cannot change when a run resumes (its data and checkpoints "
            f"come from the old setting); only {', '.join(RESUME_FIELDS)} can. Start a new run "
            "for the new setting"
        )
    with RunDir.open(run_dir) as run:
        saved = TrainConfig.load(run.config)
        config = saved.with_fields(changes).validate()
        if config.total_steps < saved.total_steps:
            raise ConfigError(
                f"total_steps can only extend a run: {run.path} runs to {saved.total_steps}, "
                f"not {config.total_steps}"
            )
        checkpoint = run.load_checkpoint()
        run.check_metrics(checkpoint["iteration"] - 1)  # before anything is written
        if changes:
            resolve_device(config.device)
            config.save(run.config)
        return _run(config, run, checkpoint=checkpoint, on_metrics=on_metrics)


BRANCH_FIXED = ("env", "env_kwargs", "seed", "random_steps", "steps_per_iteration")
"""What a branch may not change: its data come from that env; the seed picks its evaluation
episodes (its random states come from the snapshot); and the steps each iteration collects
number the iterations it goes on from."""


def branch(
    source_dir: str | Path,
    at_steps: int,
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    *,
    reseed: int | None = None,
    on_metrics: MetricsHook | None = None,
) -> RunResult:
    """Start a new run in ``run_dir`` where the run in ``source_dir`` stood at ``at_steps``
    env steps (its snapshot there): the same first ``at_steps`` transitions, learned parts,
    optimizer moments, random states and metrics, then ``changes`` (dotted config fields, as
    in :meth:`TrainConfig.with_fields`, learning rates included) from there on.

    This tests a change on one history, e.g. ``{"policy.check_against_best": True}`` from
    just before a collapse (which then holds refits to the best prior from the branch point
    on). Like a resumed run, a branch starts a fresh episode where its source was mid-episode
    (the simulator's state is not saved), so it does not replay the source's continuation: a
    branch with no changes is the control. On a CPU branches are deterministic, so a second
    control from the same snapshot repeats the first; ``reseed`` replaces the snapshot's
    random states (env resets, minibatches, noise, the planner's samples) by ones from this
    seed, keeping the evaluation episodes, so branches with different ``reseed`` are
    replicates. ``branch.json`` in the new folder names the source, the step,
    the changes and the reseed.
    """
    changes = changes or {}
    if reseed is not None and reseed < 0:
        raise ConfigError(f"reseed must be a non-negative integer, got {reseed}")
    fixed = sorted(set(changes) & set(BRANCH_FIXED))
    if fixed:
        raise ConfigError(
            f"{', '.join(fixed)} cannot change in a branch (only {', '.join(BRANCH_FIXED)} "
            "are fixed: the data, evaluation episodes and iterations come from the source). "
            "Start a new run with --out instead"
        )
    source = RunDir.open(source_dir)
    checkpoint = source.load_checkpoint(at_steps=at_steps)
    config = TrainConfig.load(source.config).with_fields(changes).validate()
    if config.total_steps <= at_steps:
        raise ConfigError(
            f"total_steps ({config.total_steps}) must be above the branch point ({at_steps})"
        )
    agent = _check_runnable(config)
    try:
        load_learned_parts(agent, checkpoint)
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(
            f"the changes {sorted(changes)} do not fit the learned parts of {source.path} "
            f"at {at_steps} steps ({type(exc).__name__}: {str(exc).splitlines()[0]}); a "
            "branch keeps them, so it cannot resize or add a model, value or prior"
        ) from None
    transitions = journal_prefix(source.journal, at_steps, agent.model.obs_dim, agent.model.act_dim)
    if reseed is not None:  # before the folder's first checkpoint: a resume keeps them
        checkpoint = reseeded(checkpoint, reseed, resolve_device(config.device))
    with RunDir.create(run_dir) as run:  # config.json last: a failure before leaves no run
        run.journal.write_bytes(transitions)
        run.copy_metrics_from(source, up_to_iteration=checkpoint["iteration"] - 1)
        run.save_checkpoint(checkpoint)
        provenance = {
            "source": str(source.path.resolve()),
            "at_steps": at_steps,
            "changes": {k: v.value if isinstance(v, Enum) else v for k, v in changes.items()},
            "reseed": reseed,
        }
        (run.path / "branch.json").write_text(json.dumps(provenance, indent=2) + "\n")
        config.save(run.config)
        return _run(config, run, checkpoint=checkpoint, on_metrics=on_metrics)


def reseeded(checkpoint: dict[str, Any], seed: int, device: torch.device) -> dict[str, Any]:
    """``checkpoint`` with its numpy, torch and planner random states drawn from ``seed``
    (three independent streams; the planner's on ``device``, where it will run)."""
    numpy_seed, torch_seed, planner_seed = np.random.SeedSequence(seed).generate_state(3)
    planner = torch.Generator(device=device).manual_seed(int(planner_seed))
    return {
        **checkpoint,
        "numpy_rng": np.random.default_rng(numpy_seed).bit_generator.state,
        "torch_rng": torch.Generator().manual_seed(int(torch_seed)).get_state(),
        "planner": {**checkpoint["planner"], "generator": planner.get_state()},
    }


class Collector:
    """Steps one env, writing every transition to the buffer as it happens; ``ends_early(obs)``
    cuts an episode (as truncated) at a state not worth playing on from."""

    def __init__(
        self,
        env: gym.Env,
        buffer: ReplayBuffer,
        rng: np.random.Generator,
        ends_early: Callable[[np.ndarray], bool] = lambda obs: False,
    ) -> None:
        self.env, self.buffer, self.rng, self.ends_early = env, buffer, rng, ends_early
        self.episode = int(buffer.episode.max()) + 1 if len(buffer) else 0
        self.obs: np.ndarray | None = None
        self.episode_return = 0.0
        self.finished_returns: list[float] = []

    def run(
        self,
        policy: Callable[[np.ndarray], np.ndarray],
        until: int,
        on_episode_start: Callable[[], None],
        end_episode_at_target: bool = False,
        on_step: Callable[[], None] = lambda: None,
    ) -> None:
        low, high = self.env.action_space.low, self.env.action_space.high
        while len(self.buffer) < until:
            if self.obs is None:
                self.obs, _ = self.env.reset(seed=int(self.rng.integers(2**31)))
                self.episode_return = 0.0
                on_episode_start()
            action = np.clip(policy(self.obs), low, high).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = self.env.step(action)
            cut = (end_episode_at_target and len(self.buffer) + 1 == until) or (
                not terminated and self.ends_early(next_obs)
            )
            self.buffer.add(
                self.obs, action, reward, next_obs, terminated, truncated or cut, self.episode
            )
            self.episode_return += float(reward)
            self.obs = next_obs
            on_step()
            if terminated or truncated or cut:
                self.finished_returns.append(self.episode_return)
                self.obs = None
                self.episode += 1


def _run(
    config: TrainConfig, run: RunDir, checkpoint: dict | None, on_metrics: MetricsHook | None
) -> RunResult:
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    env = make_env(config.env, **config.env_kwargs)
    eval_env = make_env(config.env, **config.env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high
    half_range = (high - low) / 2

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    agent = build_mpc_agent(config, env, device)
    model, planner, critic = agent.model, agent.planner, agent.terminal_value
    trainer = ModelTrainer(model, config.dynamics.lr, config.dynamics.weight_decay)
    v = config.value
    expansion = (
        ModelExpansion(model, agent.task, agent.policy, v.expansion) if v.expansion else None
    )
    value_trainer = (
        ValueTrainer(critic, v.lr, v.gamma, v.tau, v.td_steps, v.td_lambda, expansion)
        if isinstance(critic, ValueEnsemble)
        else None
    )
    value_loss = math.nan
    pi = config.policy
    policy_trainer = build_policy_trainer(config, agent)
    policy_fit = PolicyFit(math.nan, kept_previous=False)
    first_iteration, trained, fit = 1, False, FitResult(math.nan, math.nan, 0)
    wall_offset = 0.0
    if run.journal.exists():
        buffer = ReplayBuffer.from_journal(run.journal, obs_dim, act_dim)
        buffer.mark_last_truncated()
    else:
        buffer = ReplayBuffer(obs_dim, act_dim)
    buffer.attach_journal(run.journal)
    if checkpoint is not None:
        load_learned_parts(agent, checkpoint)
        trainer.load_state_dict(checkpoint["trainer"])
        planner.load_state_dict(checkpoint["planner"])
        rng.bit_generator.state = checkpoint["numpy_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        first_iteration, trained = checkpoint["iteration"], checkpoint["trained"]
        fit = FitResult(*checkpoint["fit"])
        if value_trainer is not None:
            value_trainer.load_state_dict(checkpoint["value_trainer"])
            value_loss = checkpoint["value_loss"]
        if policy_trainer is not None:
            policy_trainer.load_state_dict(checkpoint["policy_trainer"])
            policy_fit = PolicyFit(
                checkpoint["policy_return"],
                checkpoint.get("policy_kept_previous", False),
                checkpoint.get("policy_check_return", math.nan),
                checkpoint.get("policy_alpha", math.nan),
                checkpoint.get("policy_entropy", math.nan),
            )
        wall_offset = checkpoint["wall_s"]
        run.keep_metrics_up_to(first_iteration - 1)
    metrics = run.read_metrics()
    if checkpoint is not None and config.snapshots:
        _snapshot_if_lost(run, checkpoint, metrics)
    collector = Collector(env, buffer, rng, _turned_over(agent.task, config.reset_below_upright))
    writer = (
        _summary_writer_class()(log_dir=str(run.path / "tensorboard"))
        if config.tensorboard
        else None
    )
    started = time.perf_counter()

    def save(next_iteration: int, model_trained: bool) -> None:
        run.save_checkpoint(
            {
                "model": model.state_dict(),
                "trainer": trainer.state_dict(),
                "planner": planner.state_dict(),
                "numpy_rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "iteration": next_iteration,
                "trained": model_trained,
                "fit": [fit.train_loss, fit.val_loss, fit.epochs],
                "wall_s": wall_offset + time.perf_counter() - started,
                "env_steps": len(buffer),
                **({} if critic is None else {"value": critic.state_dict()}),
                **(
                    {}
                    if value_trainer is None
                    else {
                        "value_trainer": value_trainer.state_dict(),
                        "value_loss": value_loss,
                    }
                ),
                **(
                    {}
                    if policy_trainer is None
                    else {
                        "policy": agent.policy.state_dict(),
                        "policy_trainer": policy_trainer.state_dict(),
                        "policy_return": policy_fit.imagined_return,
                        "policy_kept_previous": policy_fit.kept_previous,
                        "policy_check_return": policy_fit.check_return,
                        "policy_alpha": policy_fit.alpha,
                        "policy_entropy": policy_fit.entropy,
                    }
                ),
            }
        )

    if checkpoint is None:
        save(first_iteration, model_trained=False)
    bar = tqdm(
        total=config.total_steps,
        initial=len(buffer),
        desc=config.env,
        unit="step",
        disable=not config.progress,
    )
    show = lambda: bar.update(1)  # noqa: E731
    if len(buffer) < config.random_steps:
        collector.run(
            lambda _: rng.uniform(low, high),
            config.random_steps,
            lambda: None,
            end_episode_at_target=True,
            on_step=show,
        )
    num_iterations = math.ceil(
        (config.total_steps - config.random_steps) / config.steps_per_iteration
    )
    actor = PolicyAgent(agent.policy, explore=True) if pi.collect else agent
    last_eval = math.nan  # shown in the progress bar between evaluations

    def noisy_action(obs: np.ndarray) -> np.ndarray:
        action = actor.act(obs)
        if config.exploration_noise > 0:
            action = action + config.exploration_noise * half_range * rng.normal(size=act_dim)
        return action

    for iteration in range(first_iteration, num_iterations + 1):
        fit_started = time.perf_counter()
        # NaN for an iteration whose training was done before a resume: its time is unknown
        fit_seconds = value_seconds = policy_seconds = math.nan
        if not trained:
            if config.dynamics.from_scratch:
                model.load_state_dict(build_model(config, obs_dim, act_dim).to(device).state_dict())
                trainer = ModelTrainer(model, config.dynamics.lr, config.dynamics.weight_decay)
            fit = trainer.fit(
                buffer,
                rng,
                config.dynamics.max_epochs,
                config.dynamics.batch_size,
                config.dynamics.val_fraction,
                config.dynamics.patience,
                config.dynamics.max_updates,
                progress=config.progress,
            )
            value_started = time.perf_counter()
            if value_trainer is not None:
                value_loss = value_trainer.fit(buffer, rng, v.updates, v.batch_size)
            if isinstance(critic, LQRValue):
                critic.fit(model)
            policy_started = time.perf_counter()
            value_seconds = policy_started - value_started
            if isinstance(policy_trainer, ActorCriticTrainer):
                policy_fit = policy_trainer.fit(buffer, rng, progress=config.progress)
            elif policy_trainer is not None:
                policy_fit = policy_trainer.fit(buffer, rng, pi.updates, pi.batch_size)
            policy_seconds = time.perf_counter() - policy_started
            save(iteration, model_trained=True)
            fit_seconds = time.perf_counter() - fit_started
        trained = False
        target = min(
            config.random_steps + iteration * config.steps_per_iteration, config.total_steps
        )
        steps_before, seconds_before = len(buffer), agent.plan_seconds
        finished_before = len(collector.finished_returns)

        collector.run(noisy_action, target, actor.reset, on_step=show)
        collected = len(buffer) - steps_before  # 0 when a resumed run had them all
        plan_ms = (
            1000 * (agent.plan_seconds - seconds_before) / collected if collected else math.nan
        )
        finished = collector.finished_returns[finished_before:]
        eval_started = time.perf_counter()
        evaluated = iteration % config.eval_every == 0 or iteration == num_iterations
        evaluation = dict.fromkeys(EVAL_COLUMNS, math.nan)  # kept between evaluations
        if evaluated:
            evaluation = _evaluate(agent, eval_env, config.eval_episodes, config.seed, iteration)
            last_eval = evaluation["eval_return_mean"]
        eval_seconds = time.perf_counter() - eval_started
        row = {
            "iteration": iteration,
            "env_steps": len(buffer),
            **evaluation,
            "train_return": float(np.mean(finished)) if finished else math.nan,
            "episodes": collector.episode,
            "model_train_loss": fit.train_loss,
            "model_val_loss": fit.val_loss,
            "value_loss": value_loss,
            "policy_return": policy_fit.imagined_return,
            "policy_kept_previous": (  # NaN without a start-state check
                float(policy_fit.kept_previous) if pi.enabled and pi.check_horizon else math.nan
            ),
            "policy_check_return": policy_fit.check_return,
            "policy_alpha": policy_fit.alpha,
            "policy_entropy": policy_fit.entropy,
            "plan_ms_per_step": plan_ms,
            "model_fit_s": fit_seconds,
            "value_fit_s": value_seconds if critic is not None else math.nan,
            "policy_fit_s": policy_seconds if policy_trainer is not None else math.nan,
            "eval_s": eval_seconds,
            "wall_s": wall_offset + time.perf_counter() - started,
        }
        metrics.append(row)
        run.append_metrics(row)
        if on_metrics is not None and evaluated:
            on_metrics(row)
        save(iteration + 1, model_trained=False)
        if evaluated and config.snapshots:  # the weights just evaluated
            run.snapshot(len(buffer))
        model.save(run.model)
        plot_learning_curve(metrics, run.plot, f"{config.env} · {config.planner} · {config.model}")
        if writer is not None:
            for key, value in row.items():
                writer.add_scalar(key, value, global_step=len(buffer))
        bar.set_postfix(
            eval=f"{last_eval:.1f}",
            train=f"{row['train_return']:.1f}",
            loss=f"{fit.val_loss:.4f}",
        )
        if evaluated and config.stop_at_return is not None and last_eval >= config.stop_at_return:
            break
    bar.close()
    if writer is not None:
        writer.close()
    env.close()
    eval_env.close()
    return RunResult(run.path, metrics)


def _snapshot_if_lost(run: RunDir, checkpoint: dict, metrics: list[dict[str, float]]) -> None:
    """Take the snapshot of the evaluation just before ``checkpoint`` if it is missing (a kill
    came between saving the checkpoint and linking it, or snapshots were off until this
    resume): a checkpoint saved after an evaluation holds the evaluated weights."""
    last = metrics[-1] if metrics else None
    if (
        last is not None
        and not checkpoint["trained"]
        and not math.isnan(last["eval_return_mean"])
        and int(last["env_steps"]) == checkpoint["env_steps"]
        and checkpoint["env_steps"] not in run.snapshot_steps()
    ):
        run.snapshot(checkpoint["env_steps"])


EVAL_COLUMNS = ("eval_return_mean", "eval_return_std", "eval_length_mean", "policy_eval_return")
"""The metrics columns an evaluation fills (NaN in the iterations between evaluations)."""


def _turned_over(task: tasks.Task, min_upright: float | None) -> Callable[[np.ndarray], bool]:
    """Whether an observation ``[S]`` is unhealthy once the upright bound is added to the task's
    rule (never, for None); the env has already ended the states its own rule calls unhealthy."""
    if min_upright is None:
        return lambda obs: False
    bounded = task.with_min_upright(min_upright)
    return lambda obs: not bool(bounded.is_healthy(torch.as_tensor(obs)))


def _evaluate(
    agent: MPCAgent, env: gym.Env, episodes: int, run_seed: int, iteration: int
) -> dict[str, float]:
    """The evaluation columns: the MPC agent and (if any) its prior alone on the same episodes."""
    seed = evaluation_seed(run_seed, iteration)
    result = evaluate(agent, env, episodes, seed)
    prior = (
        math.nan
        if agent.policy is None
        else evaluate(PolicyAgent(agent.policy), env, episodes, seed).mean
    )
    agent.reset()
    return {
        "eval_return_mean": result.mean,
        "eval_return_std": result.std,
        "eval_length_mean": float(np.mean(result.lengths)),
        "policy_eval_return": prior,
    }


def _summary_writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'dynaplan[tensorboard]'"
        ) from exc
    return SummaryWriter
