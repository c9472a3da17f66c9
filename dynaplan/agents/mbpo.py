"""MBPO (Janner et al. 2019, "When to trust your model"): SAC trained mostly on short model
rollouts branched from real states.

    D_env <- random-action transitions
    for each env step t after that:
        every model_train_every steps: train the dynamics ensemble on D_env
        every rollouts_every steps: from rollout_batch states of D_env, roll the model out
            k(t) steps with the SAC policy and add the predictions to D_model (FIFO)
        act once in the env with the SAC policy, add the transition to D_env
        updates_per_step SAC updates, each on a batch of real_ratio D_env + the rest D_model

SAC is Stable-Baselines3's own: its replay buffer is replaced by a :class:`MixedReplay` over
two SB3 replay buffers, so SB3's ``SAC.train`` does every update. Model rewards and dones
come from the env's task (``dynaplan.tasks``), not from the model.

The run folder is that of ``dynaplan train`` and ``dynaplan baseline`` (same ``metrics.csv``
columns, evaluations on a fixed env-step grid): every real transition is journaled as it is
collected, and at each evaluation ``checkpoint.pt`` (SAC, model, optimisers, RNG states) is
replaced atomically. ``resume_mbpo`` rebuilds the real data from the journal, so a kill loses
no real transition; the model-rollout buffer is not saved: a resumed run refills it with one
rollout round before its first SAC update.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize
from torch import Tensor

from dynaplan import tasks
from dynaplan.agents.baselines import Recorder, SB3Agent
from dynaplan.agents.factory import build_dynamics, resolve_device
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import MODEL_KINDS, ModelConfig, check_run_kind, read_config_file
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.loop import Collector, RunResult
from dynaplan.models import DynamicsModel, FitResult, ModelTrainer
from dynaplan.rundir import MetricsHook, RunDir, load_for_resume, run_kind
from dynaplan.tasks import Task
from dynaplan.types import Propagation, TransitionBatch

MBPO_KIND = "mbpo"
"""``config.json`` and ``checkpoint.pt`` of an MBPO run have ``"kind": "mbpo"``."""


@dataclass
class SACConfig:
    """Stable-Baselines3 SAC hyperparameters (MBPO's values); the entropy weight is learnt."""

    lr: float = 3e-4
    """Adam learning rate of actor, critics and entropy weight."""
    batch_size: int = 256
    """Transitions per SAC update (real and model rows together)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    net_arch: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor and of each critic."""


def _mbpo_dynamics() -> ModelConfig:
    return ModelConfig(ensemble_size=7, num_elites=5, hidden_size=200, num_layers=4)


@dataclass
class MBPOConfig:
    """One MBPO run. The defaults are MBPO's Hopper settings, scaled for a CPU.

    MBPO (Hopper): 5000 random steps; a probabilistic ensemble of 7 (5 elites, 4 x 200
    hidden units) refit every 250 env steps; every 250 env steps 100k branched rollouts whose
    length grows from 1 to 15 over env steps 20k-100k; model data of the last epoch kept; 20
    SAC updates per env step with 5% real data in each batch of 256; evaluation each 1000
    steps. Scaled here: 10k rollouts per round (model buffer 600k rows, 4 rounds at length
    15), 10 SAC updates per env step, evaluation every 5000 steps, 100k env steps in all.
    These are not tuned; the toy-env tests use tiny sizes.
    """

    env: str = "Hopper-v5"
    """Gymnasium env id with a registered task (its reward and termination label rollouts)."""
    total_steps: int = 100_000
    """Real env steps in all, the random ones included."""
    seed: int = 0
    """Seeds the env, torch, numpy and SAC."""
    random_steps: int = 5000
    """Env steps of uniform random actions before the first model and SAC update."""
    model: str = "pets"
    """Dynamics model: mlp, ensemble (deterministic) or pets (probabilistic, as in MBPO)."""
    dynamics: ModelConfig = field(default_factory=_mbpo_dynamics)
    model_train_every: int = 250
    """Env steps between model fits."""
    rollout_batch: int = 10_000
    """Real start states per rollout round (a multiple of the model's elites)."""
    rollouts_every: int = 250
    """Env steps between rollout rounds."""
    rollout_min_length: int = 1
    """Rollout length until rollout_grow_from env steps."""
    rollout_max_length: int = 15
    """Rollout length from rollout_grow_to env steps on (linear in between)."""
    rollout_grow_from: int = 20_000
    """Env step at which rollouts start growing longer."""
    rollout_grow_to: int = 100_000
    """Env step at which rollouts reach rollout_max_length."""
    model_buffer_size: int = 600_000
    """Model transitions kept (first in, first out): the last few rounds of rollouts."""
    updates_per_step: int = 10
    """SAC gradient steps per env step (MBPO: 20)."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch."""
    sac: SACConfig = field(default_factory=SACConfig)
    eval_every: int = 5000
    """Evaluate the deterministic policy every this many env steps (and at total_steps)."""
    eval_episodes: int = 5
    """Episodes on a separate env at each evaluation."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gym.make."""
    device: str = "auto"
    """auto, cpu or cuda (cuda:N) for the model and SAC."""
    threads: int = 1
    """CPU threads for torch (0 keeps torch's default)."""
    progress: bool = True
    """Show a progress bar."""
    label: str = "mbpo"
    """Group name in comparisons."""

    def validate(self) -> MBPOConfig:
        """Raise ConfigError on the first bad value; returns self."""
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {MODEL_KINDS}")
        self.dynamics.validate()
        for name in (
            "total_steps",
            "model_train_every",
            "rollout_batch",
            "rollouts_every",
            "model_buffer_size",
            "updates_per_step",
            "eval_every",
            "eval_episodes",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.random_steps < self.total_steps:
            raise ConfigError(
                f"random_steps ({self.random_steps}) must be in [1, total_steps "
                f"({self.total_steps})): the first model needs data"
            )
        if not 1 <= self.rollout_min_length <= self.rollout_max_length:
            raise ConfigError(
                "need 1 <= rollout_min_length <= rollout_max_length, got "
                f"{self.rollout_min_length}, {self.rollout_max_length}"
            )
        if not 0 <= self.rollout_grow_from <= self.rollout_grow_to:
            raise ConfigError(
                "need 0 <= rollout_grow_from <= rollout_grow_to, got "
                f"{self.rollout_grow_from}, {self.rollout_grow_to}"
            )
        if not 0 <= self.real_ratio <= 1:
            raise ConfigError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        elites = self.num_elites()
        if self.rollout_batch % elites:
            raise ConfigError(
                f"rollout_batch ({self.rollout_batch}) must be a multiple of the model's "
                f"elites ({elites}): each row follows a random elite"
            )
        s = self.sac
        if s.batch_size <= 0 or s.lr <= 0 or not s.net_arch or min(s.net_arch) <= 0:
            raise ConfigError("need sac.batch_size > 0, sac.lr > 0 and positive sac.net_arch")
        if not (0 < s.gamma < 1 and 0 < s.tau <= 1):
            raise ConfigError(
                f"need sac.gamma in (0, 1), sac.tau in (0, 1]; got {s.gamma}, {s.tau}"
            )
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        return self

    def num_elites(self) -> int:
        """Members the model predicts with (1 for an mlp)."""
        if self.model == "mlp":
            return 1
        return self.dynamics.num_elites or self.dynamics.ensemble_size

    def rollout_length(self, env_steps: int) -> int:
        """MBPO's schedule: min length until grow_from, linear to max length at grow_to."""
        span = max(self.rollout_grow_to - self.rollout_grow_from, 1)
        frac = min(max((env_steps - self.rollout_grow_from) / span, 0.0), 1.0)
        growth = frac * (self.rollout_max_length - self.rollout_min_length)
        return self.rollout_min_length + int(growth)

    def eval_grid(self) -> list[int]:
        """Env steps of the evaluations: every ``eval_every``, and ``total_steps``."""
        return [*range(self.eval_every, self.total_steps, self.eval_every), self.total_steps]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": MBPO_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MBPOConfig:
        """Build from a ``config.json`` dict; it must be an MBPO run's."""
        check_run_kind(data, MBPO_KIND)
        data = dict(data)
        data.pop("kind")
        try:
            sac = dict(data.pop("sac", {}))
            if "net_arch" in sac:
                sac["net_arch"] = tuple(sac["net_arch"])
            dynamics = ModelConfig(**data.pop("dynamics", {}))
            return cls(**data, dynamics=dynamics, sac=SACConfig(**sac))
        except TypeError as exc:
            raise ConfigError(f"bad MBPO configuration: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> MBPOConfig:
        return cls.from_dict(read_config_file(path))


@dataclass
class MixedReplay:
    """SAC's replay buffer in MBPO: batches of ``real_ratio`` real rows, the rest model rows.

    Only ``sample`` is used by ``SAC.train``; rows are added to ``real`` and ``model``.
    """

    real: SB3ReplayBuffer
    model: SB3ReplayBuffer
    real_ratio: float

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        n_real = round(self.real_ratio * batch_size)
        parts = [
            buffer.sample(n, env)
            for buffer, n in ((self.real, n_real), (self.model, batch_size - n_real))
            if n > 0
        ]
        fields = zip(*(part[:5] for part in parts), strict=True)  # (no n-step discounts)
        return ReplayBufferSamples(*(torch.cat(f) for f in fields))


@torch.no_grad()
def model_rollout(
    model: DynamicsModel,
    task: Task,
    policy: Callable[[Tensor], Tensor],
    start_obs: Tensor,
    length: int,
) -> TransitionBatch:
    """Branched rollouts of up to ``length`` steps from ``start_obs: [N, S]``.

    Each step: ``action = policy(obs)`` ``[N, A]``; the next state from a random elite per
    row (``Propagation.TS1``; a probabilistic model also samples its Gaussian); the reward
    and termination from ``task`` (its env-exact ``true_reward`` where it has one, else its
    ``reward``). A row ends at its first termination. Returns the transitions of the live
    rows, step by step: each field ``[M, ...]`` with ``N <= M <= N * length``.
    """
    if start_obs.ndim != 2 or length <= 0:
        raise ValueError(f"need start_obs [N, S] and length > 0; got {start_obs.shape}, {length}")
    reward_fn = task.true_reward if task.has_true_reward else task.reward
    obs = start_obs
    alive = torch.ones(len(obs), dtype=torch.bool, device=obs.device)
    steps = []
    for _ in range(length):
        action = policy(obs)
        next_obs = model.step(obs, action, Propagation.TS1)
        reward = reward_fn(obs, action, next_obs)
        terminated = task.terminated(next_obs)
        steps.append(
            TransitionBatch(*(x[alive] for x in (obs, action, next_obs, reward, terminated)))
        )
        alive = alive & ~terminated
        if not alive.any():
            break
        obs = next_obs
    return TransitionBatch(*(torch.cat(f) for f in zip(*steps, strict=True)))


def run_mbpo(
    config: MBPOConfig, run_dir: str | Path, on_metrics: MetricsHook | None = None
) -> RunResult:
    """Start a new MBPO run in ``run_dir`` (which must not hold a run yet).

    ``on_metrics`` is called with each metrics row as it is written.
    """
    config.validate()
    resolve_device(config.device)
    env = make_env(config.env, **config.env_kwargs)
    try:  # fail on an env without a task, or bad model sizes, before the run folder is made
        tasks.get(config.env, env)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        build_dynamics(config.model, config.dynamics, obs_dim, act_dim)
    finally:
        env.close()
    with RunDir.create(run_dir) as run:
        config.save(run.config)
        return _run(config, run, None, on_metrics)


def resume_mbpo(run_dir: str | Path, on_metrics: MetricsHook | None = None) -> RunResult:
    """Continue an MBPO run from its last checkpoint and its journal of real transitions."""
    with RunDir.open(run_dir) as run:
        config, checkpoint = load_for_resume(
            run, lambda path: MBPOConfig.load(path).validate(), MBPO_KIND
        )
        return _run(config, run, checkpoint, on_metrics)


def is_mbpo_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds an MBPO run."""
    return run_kind(run_dir) == MBPO_KIND


def load_mbpo_agent(run_dir: str | Path, device: str = "cpu") -> tuple[SB3Agent, MBPOConfig]:
    """The deterministic SAC policy of an MBPO run's last checkpoint, and its config."""
    run = RunDir.open(run_dir)
    config = MBPOConfig.load(run.config)
    env = make_env(config.env, **config.env_kwargs)
    sac = _new_sac(config, env, torch.device(device))
    sac.set_parameters(run.load_checkpoint()["sac"], device=device)
    env.close()
    return SB3Agent(sac), config


def _new_sac(config: MBPOConfig, env: gym.Env, device: torch.device) -> SAC:
    """SB3 SAC (never stepped by SB3: buffer of one row, a logger that writes nothing)."""
    s = config.sac
    sac = SAC(
        "MlpPolicy",
        env,
        learning_rate=s.lr,
        buffer_size=1,
        learning_starts=0,
        batch_size=s.batch_size,
        tau=s.tau,
        gamma=s.gamma,
        policy_kwargs=dict(net_arch=list(s.net_arch)),
        seed=config.seed,
        device=device,
        verbose=0,
    )
    sac.set_logger(Logger(folder=None, output_formats=[]))
    return sac


def _sb3_buffer(size: int, env: gym.Env, device: torch.device) -> SB3ReplayBuffer:
    return SB3ReplayBuffer(
        size,
        env.observation_space,
        env.action_space,
        device=device,
        handle_timeout_termination=False,  # rows are added with done = terminated
    )


def add_transitions(buffer: SB3ReplayBuffer, policy: BasePolicy, batch: TransitionBatch) -> None:
    """Append the ``N`` rows of ``batch`` (env-unit actions) to an SB3 buffer in one write,
    oldest out first when it is full; actions are stored scaled, as SAC stores them."""
    obs, action, next_obs, reward, terminated = (
        x[-buffer.buffer_size :].cpu().numpy() for x in batch
    )
    n, size = len(reward), buffer.buffer_size
    rows = (buffer.pos + np.arange(n)) % size
    buffer.observations[rows, 0] = obs
    buffer.next_observations[rows, 0] = next_obs
    buffer.actions[rows, 0] = policy.scale_action(action)
    buffer.rewards[rows, 0] = reward
    buffer.dones[rows, 0] = terminated
    buffer.full = buffer.full or buffer.pos + n >= size
    buffer.pos = (buffer.pos + n) % size


def _run(
    config: MBPOConfig,
    run: RunDir,
    checkpoint: dict[str, Any] | None,
    on_metrics: MetricsHook | None,
) -> RunResult:
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    env = make_env(config.env, **config.env_kwargs)
    eval_env = make_env(config.env, **config.env_kwargs)
    task = tasks.get(config.env, env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    low, high = env.action_space.low, env.action_space.high

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    m = config.dynamics
    model = build_dynamics(config.model, m, obs_dim, act_dim).to(device)
    trainer = ModelTrainer(model, m.lr, m.weight_decay)
    fit, fit_seconds = FitResult(math.nan, math.nan, 0), math.nan
    sac = _new_sac(config, env, device)
    real = _sb3_buffer(config.total_steps, env, device)
    imagined = _sb3_buffer(config.model_buffer_size, env, device)
    sac.replay_buffer = MixedReplay(real, imagined, config.real_ratio)  # type: ignore[assignment]

    if run.journal.exists():
        buffer = ReplayBuffer.from_journal(run.journal, obs_dim, act_dim)
        buffer.mark_last_truncated()
    else:
        buffer = ReplayBuffer(obs_dim, act_dim)
    buffer.attach_journal(run.journal)
    add_transitions(real, sac.policy, buffer.batch(np.arange(len(buffer))))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        trainer.load_state_dict(checkpoint["trainer"])
        sac.set_parameters(checkpoint["sac"], device=device)
        with torch.no_grad():
            sac.log_ent_coef.copy_(checkpoint["log_ent_coef"])
        rng.bit_generator.state = checkpoint["numpy_rng"]
        torch.set_rng_state(checkpoint["torch_rng"])
        fit = FitResult(*checkpoint["fit"])
        sac.set_random_seed(config.seed + checkpoint["iteration"])

    recorder = Recorder(
        config, run, eval_env, lambda _: {}, checkpoint, on_metrics, MBPO_KIND, MBPO_KIND
    )
    recorder.extra_state = lambda: {
        "model": model.state_dict(),
        "trainer": trainer.state_dict(),
        "sac": sac.get_parameters(),
        "log_ent_coef": sac.log_ent_coef.detach().clone(),
        "numpy_rng": rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
        "fit": [fit.train_loss, fit.val_loss, fit.epochs],
        "imagined_size": imagined.size(),  # refilled on resume rather than stored
    }
    recorder.extra_metrics = lambda: {
        "model_train_loss": fit.train_loss,
        "model_val_loss": fit.val_loss,
        "model_fit_s": fit_seconds,
    }
    if checkpoint is None:
        recorder.save(0)
    agent = SB3Agent(sac)
    collector = Collector(env, buffer, rng)
    reported = 0
    act_low = torch.as_tensor(low, device=device)
    act_range = torch.as_tensor(high - low, device=device)

    def rollout_policy(obs: Tensor) -> Tensor:
        """SAC's stochastic action in env units for ``obs: [N, S]``."""
        return act_low + 0.5 * (sac.actor(obs, deterministic=False) + 1) * act_range

    def sac_policy(obs: np.ndarray) -> np.ndarray:
        return sac.predict(obs, deterministic=False)[0]

    def rollout_round(t: int) -> None:
        """Branched rollouts from ``rollout_batch`` random real states into ``imagined``."""
        starts = torch.as_tensor(buffer.obs[rng.integers(t, size=config.rollout_batch)])
        rollout = model_rollout(
            model, task, rollout_policy, starts.to(device), config.rollout_length(t)
        )
        add_transitions(imagined, sac.policy, rollout)

    if checkpoint is not None:
        # SAC trains on the model buffer as it was, not on one round: refill it with rollouts
        # of the restored model and policy (a resumed run's model rows are new draws)
        while imagined.size() < checkpoint.get("imagined_size", 0):
            rollout_round(len(buffer))
    recorder.step(agent, len(buffer))  # a resumed run killed before an evaluation's checkpoint
    while len(buffer) < config.total_steps:
        t = len(buffer)
        learning, since = t >= config.random_steps, t - config.random_steps
        if learning and (fit.epochs == 0 or since % config.model_train_every == 0):
            fit_started = time.perf_counter()
            fit = trainer.fit(
                buffer,
                rng,
                max_epochs=m.max_epochs,
                batch_size=m.batch_size,
                val_fraction=m.val_fraction,
                patience=m.patience,
                max_updates=m.max_updates,
            )
            fit_seconds = time.perf_counter() - fit_started
        if learning and (imagined.size() == 0 or since % config.rollouts_every == 0):
            rollout_round(t)
        policy = sac_policy if learning else lambda _: rng.uniform(low, high)
        collector.run(policy, t + 1, lambda: None)
        add_transitions(real, sac.policy, buffer.batch(np.arange(t, len(buffer))))
        if learning:
            sac.train(config.updates_per_step, config.sac.batch_size)
        for episode_return in collector.finished_returns[reported:]:
            recorder.episode_finished(episode_return)
        reported = len(collector.finished_returns)
        recorder.step(agent, len(buffer))
    recorder.close()
    env.close()
    eval_env.close()
    return RunResult(run.path, recorder.rows)
