"""Baselines in the same run-folder format as MBRL: SB3 PPO and SAC, zero and random policies.

A baseline run evaluates its policy deterministically every ``eval_every`` env steps on
separate episodes and appends a row with the columns of a ``dynaplan train`` run to
``metrics.csv`` (the model-specific columns are NaN), so every tool reads both kinds of run.

Checkpoints: the SB3 files (policy zip, SAC replay buffer, ``VecNormalize`` statistics) are
written under ``sb3/`` with the env step in their names, each through a temp file and a
rename; then ``checkpoint.pt``, which names them, is replaced atomically. ``checkpoint.pt``
is the commit point, so a kill at any moment leaves a consistent checkpoint behind.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from torch import nn
from tqdm.auto import tqdm

from dynaplan.agents.factory import resolve_device
from dynaplan.analysis.curves import plot_learning_curve
from dynaplan.config import check_run_kind, read_config_file
from dynaplan.envs import make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.evaluation import evaluate, evaluation_seed
from dynaplan.imitation.policy import warm_start_ppo
from dynaplan.loop import RunResult
from dynaplan.rundir import METRIC_COLUMNS, MetricsHook, RunDir, load_for_resume, run_kind
from dynaplan.types import Agent

BASELINE_KIND = "baseline"
"""``config.json`` of a baseline run has ``"kind": "baseline"``; MBRL runs have no ``kind``."""
LEARNERS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}
ALGOS = ("ppo", "sac", "zero", "random")
PRESETS = ("default", "zoo")
SB3_FOLDER = "sb3"


@dataclass(frozen=True)
class ZooHyperparams:
    """One rl-zoo3 entry: SB3 keyword arguments, and whether ``VecNormalize`` wraps the env."""

    kwargs: Mapping[str, Any]
    normalize: bool = False
    """Normalise observations and rewards (rl-zoo3 ``normalize: true``, with the algo's gamma)."""


_ZOO_PPO_POLICY = dict(
    log_std_init=-2,
    ortho_init=False,
    activation_fn=nn.ReLU,
    net_arch=dict(pi=[256, 256], vf=[256, 256]),
)

# Source: rl-zoo3 (DLR-RM/rl-baselines3-zoo) hyperparams/ppo.yml and hyperparams/sac.yml, the
# entries for the -v4 MuJoCo envs (InvertedPendulum: -v2), applied to -v5. Included: every
# value of those entries except n_timesteps, policy ('MlpPolicy', the only one used here) and
# n_envs (1 in all of them). PPO Ant is rl-zoo3's "mujoco-defaults" (SB3 defaults plus
# normalisation); SAC MuJoCo entries only set learning_starts. rl-zoo3 has no SAC entry for
# InvertedPendulum, so that pair has no zoo preset.
ZOO: dict[tuple[str, str], ZooHyperparams] = {
    ("ppo", "Hopper-v5"): ZooHyperparams(
        dict(
            batch_size=32,
            n_steps=512,
            gamma=0.999,
            learning_rate=9.80828e-05,
            ent_coef=0.00229519,
            clip_range=0.2,
            n_epochs=5,
            gae_lambda=0.99,
            max_grad_norm=0.7,
            vf_coef=0.835671,
            policy_kwargs=_ZOO_PPO_POLICY,
        ),
        normalize=True,
    ),
    ("ppo", "InvertedPendulum-v5"): ZooHyperparams(
        dict(
            batch_size=64,
            n_steps=32,
            gamma=0.999,
            learning_rate=0.000222425,
            ent_coef=1.37976e-07,
            clip_range=0.4,
            n_epochs=5,
            gae_lambda=0.9,
            max_grad_norm=0.3,
            vf_coef=0.19816,
        ),
        normalize=True,
    ),
    ("ppo", "HalfCheetah-v5"): ZooHyperparams(
        dict(
            batch_size=64,
            n_steps=512,
            gamma=0.98,
            learning_rate=2.0633e-05,
            ent_coef=0.000401762,
            clip_range=0.1,
            n_epochs=20,
            gae_lambda=0.92,
            max_grad_norm=0.8,
            vf_coef=0.58096,
            policy_kwargs=_ZOO_PPO_POLICY,
        ),
        normalize=True,
    ),
    ("ppo", "Walker2d-v5"): ZooHyperparams(
        dict(
            batch_size=32,
            n_steps=512,
            gamma=0.99,
            learning_rate=5.05041e-05,
            ent_coef=0.000585045,
            clip_range=0.1,
            n_epochs=20,
            gae_lambda=0.95,
            max_grad_norm=1.0,
            vf_coef=0.871923,
        ),
        normalize=True,
    ),
    ("ppo", "Ant-v5"): ZooHyperparams({}, normalize=True),
    **{
        ("sac", env): ZooHyperparams(dict(learning_starts=10_000))
        for env in ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5", "Ant-v5")
    },
}


@dataclass
class BaselineConfig:
    """One baseline run: SB3 PPO or SAC, or a zero / uniform-random policy (no learning)."""

    env: str = "InvertedPendulum-v5"
    """Gymnasium env id (any Box-action env; no task needs to be registered)."""
    algo: str = "ppo"
    """ppo, sac (Stable-Baselines3), zero (all-zero actions) or random (uniform actions)."""
    total_steps: int = 100_000
    """Training env steps in all (zero and random only set the evaluation grid)."""
    seed: int = 0
    """Seeds the algorithm, its training env and the random policy."""
    eval_every: int = 5000
    """Evaluate every this many env steps (and at total_steps)."""
    eval_episodes: int = 5
    """Deterministic evaluation episodes on a separate env at each evaluation."""
    preset: str = "default"
    """default (SB3's defaults) or zoo (rl-zoo3's tuned values, dynaplan.agents.baselines.ZOO)."""
    algo_kwargs: dict[str, Any] = field(default_factory=dict)
    """Python API only: SB3 keyword arguments on top of the preset (e.g. {"n_steps": 64})."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gym.make."""
    init: str | None = None
    """ppo: folder of a dynaplan clone whose policy PPO starts from (evaluated at step 0 too)."""
    init_log_std: float = -2.0
    """ppo with init: the starting log-std, small so the first rollouts act like the clone."""
    init_value_episodes: int = 0
    """ppo with init: pre-train the critic on the Monte-Carlo returns of this many clone
    rollouts (extra env steps, not counted in total_steps)."""
    device: str = "auto"
    """auto, cpu or cuda (cuda:N) for the SB3 networks."""
    threads: int = 1
    """CPU threads for torch (0 keeps torch's default)."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> BaselineConfig:
        """Raise ConfigError on the first bad value; returns self."""
        if self.algo not in ALGOS:
            raise ConfigError(f"unknown algo {self.algo!r}; choose one of {ALGOS}")
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown preset {self.preset!r}; choose one of {PRESETS}")
        for name in ("total_steps", "eval_every", "eval_episodes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if self.algo not in LEARNERS and (self.preset != "default" or self.algo_kwargs):
            raise ConfigError(
                f"the {self.algo} policy does not learn; it takes no preset or algo_kwargs"
            )
        if self.init is not None and self.algo != "ppo":
            raise ConfigError(f"--init warm-starts PPO only, not {self.algo}")
        if self.init_value_episodes < 0:
            raise ConfigError(f"init_value_episodes must be >= 0, got {self.init_value_episodes}")
        if self.preset == "zoo" and (self.algo, self.env) not in ZOO:
            tuned = ", ".join(f"{a} {e}" for a, e in ZOO)
            raise ConfigError(
                f"rl-zoo3 has no tuned {self.algo} hyperparameters for {self.env} (tuned: "
                f"{tuned}); use --preset default"
            )
        return self

    def hyperparams(self) -> ZooHyperparams:
        """The preset's SB3 keyword arguments with ``algo_kwargs`` on top."""
        base = ZOO[(self.algo, self.env)] if self.preset == "zoo" else ZooHyperparams({})
        return ZooHyperparams({**base.kwargs, **self.algo_kwargs}, base.normalize)

    def eval_grid(self) -> list[int]:
        """Env steps of the evaluations: every ``eval_every``, and ``total_steps``; with
        ``init`` also 0, the starting (cloned) policy."""
        grid = list(range(self.eval_every, self.total_steps, self.eval_every))
        return [0, *grid, self.total_steps] if self.init else [*grid, self.total_steps]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": BASELINE_KIND, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        """Build from a ``config.json`` dict; it must be a baseline's."""
        check_run_kind(data, BASELINE_KIND)
        data = dict(data)
        data.pop("kind")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"bad baseline configuration: {exc}") from exc

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BaselineConfig:
        return cls.from_dict(read_config_file(path))


class ZeroAgent:
    """Always the zero action (clipped into the action box by ``evaluate``)."""

    def __init__(self, action_space: gym.spaces.Box) -> None:
        self.action = np.zeros(action_space.shape, np.float32)

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.action


class RandomAgent:
    """Uniform random actions in the action box, from its own seeded generator."""

    def __init__(self, action_space: gym.spaces.Box, seed: int) -> None:
        self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class SB3Agent:
    """An SB3 policy acting deterministically on raw observations ``[S]``.

    With ``VecNormalize``, observations are normalised with its current statistics
    (read, never updated), exactly as the policy sees them in training.
    """

    def __init__(self, model: BaseAlgorithm, normalizer: VecNormalize | None = None) -> None:
        self.model, self.normalizer = model, normalizer

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        action, _ = self.model.predict(obs, deterministic=True)
        return action


def run_baseline(
    config: BaselineConfig, run_dir: str | Path, on_metrics: MetricsHook | None = None
) -> RunResult:
    """Start a new baseline run in ``run_dir`` (which must not hold a run yet).

    ``on_metrics`` is called with each metrics row as it is written (e.g. Ray Tune's report).
    """
    config.validate()
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    eval_env = make_env(config.env, **config.env_kwargs)
    model = _new_model(config, device) if config.algo in LEARNERS else None
    with RunDir.create(run_dir) as run:
        config.save(run.config)
        return _run(config, run, model, eval_env, None, on_metrics)


def resume_baseline(run_dir: str | Path, on_metrics: MetricsHook | None = None) -> RunResult:
    """Continue a baseline run from its last checkpoint; metrics after it are dropped."""
    with RunDir.open(run_dir) as run:
        config, checkpoint = load_for_resume(
            run, lambda path: BaselineConfig.load(path).validate(), BASELINE_KIND
        )
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        eval_env = make_env(config.env, **config.env_kwargs)
        model = None
        if config.algo in LEARNERS:
            model = _load_model(config, run, checkpoint, resolve_device(config.device))
        return _run(config, run, model, eval_env, checkpoint, on_metrics)


def is_baseline_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a baseline run (rather than an MBRL run)."""
    return run_kind(run_dir) == BASELINE_KIND


def load_baseline_agent(run_dir: str | Path, device: str = "cpu") -> tuple[Agent, BaselineConfig]:
    """The agent of a baseline run's last checkpoint (deterministic), and its config."""
    run = RunDir.open(run_dir)
    config = BaselineConfig.load(run.config)
    env = make_env(config.env, **config.env_kwargs)
    try:
        if config.algo == "zero":
            return ZeroAgent(env.action_space), config
        if config.algo == "random":
            return RandomAgent(env.action_space, config.seed), config
        model = _load_model(config, run, run.load_checkpoint(), torch.device(device))
        return SB3Agent(model, model.get_vec_normalize_env()), config
    finally:
        env.close()


def _make_vec_env(config: BaselineConfig, normalize: bool, gamma: float) -> VecEnv:
    """The training env: Monitor (raw returns) inside a one-env DummyVecEnv, maybe normalised."""
    venv: VecEnv = DummyVecEnv([lambda: Monitor(make_env(config.env, **config.env_kwargs))])
    if normalize:
        venv = VecNormalize(venv, gamma=gamma)
    return venv


def _new_model(config: BaselineConfig, device: torch.device) -> BaseAlgorithm:
    hyper = config.hyperparams()
    kwargs = copy.deepcopy(dict(hyper.kwargs))  # SB3 may keep and change what it is given
    if config.algo == "sac":
        # a replay buffer that never fills samples exactly like a larger one, and its
        # checkpoints are total_steps rows instead of SB3's default million
        default = inspect.signature(SAC.__init__).parameters["buffer_size"].default
        kwargs["buffer_size"] = min(kwargs.get("buffer_size", default), config.total_steps)
    venv = _make_vec_env(config, hyper.normalize, kwargs.get("gamma", 0.99))
    try:
        model = LEARNERS[config.algo](
            "MlpPolicy", venv, seed=config.seed, device=device, verbose=0, **kwargs
        )
    except (TypeError, ValueError, AssertionError) as exc:
        venv.close()
        raise ConfigError(f"{config.algo} rejects its hyperparameters: {exc}") from exc
    if config.init is not None:
        env = make_env(config.env, **config.env_kwargs)
        try:
            warm_start_ppo(
                model,
                config.init,
                config.init_log_std,
                config.init_value_episodes,
                env,
                seed=config.seed,
            )
        finally:
            env.close()
    return model


def _load_model(
    config: BaselineConfig, run: RunDir, checkpoint: dict[str, Any], device: torch.device
) -> BaseAlgorithm:
    """The SB3 model, replay buffer and normalisation statistics that ``checkpoint`` names."""
    files = {name: run.path / rel for name, rel in checkpoint["files"].items()}
    hyper = config.hyperparams()
    venv = _make_vec_env(config, normalize=False, gamma=0.99)
    try:
        if "vecnormalize" in files:
            venv = VecNormalize.load(str(files["vecnormalize"]), venv)
        model = LEARNERS[config.algo].load(files["model"], env=venv, device=device)
        if "replay_buffer" in files and isinstance(model, OffPolicyAlgorithm):
            model.load_replay_buffer(files["replay_buffer"])
    except Exception as exc:  # any unpickling/unzipping failure means the files are unusable
        venv.close()
        raise CheckpointError(
            f"the SB3 checkpoint in {run.path / SB3_FOLDER} is missing or corrupt ({exc}); "
            "start a new run with --out"
        ) from exc
    if hyper.normalize != isinstance(venv, VecNormalize):
        raise CheckpointError(f"{run.path}: normalisation statistics do not match the config")
    return model


class EvalSchedule(Protocol):
    """What a :class:`Recorder` reads from a run's config."""

    env: str
    total_steps: int
    eval_episodes: int
    progress: bool

    def eval_grid(self) -> list[int]: ...


class Recorder:
    """Evaluates on the grid, appends metrics rows, plots, shows progress and checkpoints.

    ``name`` titles the bar and the plot and is the checkpoint's ``algo``; ``kind`` is the
    checkpoint's ``kind``. ``extra_metrics`` fills metrics columns the recorder leaves NaN
    (the model losses), ``extra_state`` adds entries to each checkpoint.
    """

    def __init__(
        self,
        config: EvalSchedule,
        run: RunDir,
        eval_env: gym.Env,
        save_files: Callable[[str], dict[str, str]],
        checkpoint: dict[str, Any] | None,
        on_metrics: MetricsHook | None,
        name: str,
        kind: str = BASELINE_KIND,
    ) -> None:
        self.config, self.run, self.eval_env, self.save_files = config, run, eval_env, save_files
        self.on_metrics, self.name, self.kind = on_metrics, name, kind
        self.grid = config.eval_grid()
        self.iteration = 0 if checkpoint is None else checkpoint["iteration"]
        self.episodes = 0 if checkpoint is None else checkpoint["episodes"]
        self.wall_offset = 0.0 if checkpoint is None else checkpoint["wall_s"]
        self.finished: list[float] = []
        self.extra_state: Callable[[], dict[str, Any]] = dict
        self.extra_metrics: Callable[[], dict[str, float]] = dict
        if checkpoint is not None:
            run.keep_metrics_up_to(self.iteration)
        self.rows = run.read_metrics()
        self.started = time.perf_counter()
        start = 0 if checkpoint is None else checkpoint["env_steps"]
        self.bar = tqdm(
            total=config.total_steps,
            initial=start,
            desc=f"{config.env} {name}",
            unit="step",
            disable=not config.progress,
        )

    @property
    def done(self) -> bool:
        return self.iteration >= len(self.grid)

    @property
    def next_step(self) -> int:
        return self.grid[self.iteration]

    def episode_finished(self, episode_return: float) -> None:
        self.finished.append(episode_return)
        self.episodes += 1

    def step(self, agent: Agent, env_steps: int) -> None:
        """Show progress; evaluate, record and checkpoint when ``env_steps`` reaches the grid."""
        self.bar.update(env_steps - self.bar.n)
        if self.done or env_steps < self.next_step:
            return
        self.iteration += 1
        eval_started = time.perf_counter()
        seed = evaluation_seed(self.config.seed, self.iteration)
        result = evaluate(agent, self.eval_env, self.config.eval_episodes, seed)
        eval_seconds = time.perf_counter() - eval_started
        row = {
            **dict.fromkeys(METRIC_COLUMNS, math.nan),  # the model-based columns stay empty
            "iteration": self.iteration,
            "env_steps": env_steps,
            "eval_return_mean": result.mean,
            "eval_return_std": result.std,
            "eval_length_mean": float(np.mean(result.lengths)),
            "train_return": float(np.mean(self.finished)) if self.finished else math.nan,
            "episodes": self.episodes,
            "eval_s": eval_seconds,
            "wall_s": self.wall_s(),
            **self.extra_metrics(),
        }
        self.finished = []
        self.rows.append(row)
        self.run.append_metrics(row)
        if self.on_metrics is not None:
            self.on_metrics(row)
        self.save(env_steps)
        plot_learning_curve(self.rows, self.run.plot, f"{self.config.env} · {self.name}")
        postfix = dict(eval=f"{result.mean:.1f}", train=f"{row['train_return']:.1f}")
        if math.isfinite(row["model_val_loss"]):
            postfix["loss"] = f"{row['model_val_loss']:.4f}"
        self.bar.set_postfix(postfix)

    def wall_s(self) -> float:
        return self.wall_offset + time.perf_counter() - self.started

    def save(self, env_steps: int) -> None:
        """Write the files, then commit them by replacing ``checkpoint.pt``; drop stale files."""
        files = self.save_files(f"{env_steps:010d}")
        self.run.save_checkpoint(
            {
                "kind": self.kind,
                "algo": self.name,
                "iteration": self.iteration,
                "env_steps": env_steps,
                "episodes": self.episodes,
                "wall_s": self.wall_s(),
                "files": files,
                **self.extra_state(),
            }
        )
        _remove_unreferenced(self.run, files)

    def close(self) -> None:
        self.bar.close()


def _remove_unreferenced(run: RunDir, files: dict[str, str]) -> None:
    """Delete SB3 files a committed checkpoint no longer names (older or orphaned)."""
    folder = run.path / SB3_FOLDER
    keep = {run.path / rel for rel in files.values()}
    for path in folder.glob("*") if folder.is_dir() else ():
        if path not in keep:
            path.unlink(missing_ok=True)


def _save_atomic(write: Callable[[Path], None], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _sb3_saver(run: RunDir, model: BaseAlgorithm) -> Callable[[str], dict[str, str]]:
    """Writes the model (+ SAC replay buffer, + normalisation stats) tagged with the step."""

    def save(tag: str) -> dict[str, str]:
        (run.path / SB3_FOLDER).mkdir(exist_ok=True)
        files = {"model": f"{SB3_FOLDER}/model_{tag}.zip"}
        _save_atomic(model.save, run.path / files["model"])
        if isinstance(model, OffPolicyAlgorithm):
            files["replay_buffer"] = f"{SB3_FOLDER}/replay_buffer_{tag}.pkl"
            _save_atomic(model.save_replay_buffer, run.path / files["replay_buffer"])
        normalizer = model.get_vec_normalize_env()
        if normalizer is not None:
            files["vecnormalize"] = f"{SB3_FOLDER}/vecnormalize_{tag}.pkl"
            _save_atomic(normalizer.save, run.path / files["vecnormalize"])
        return files

    return save


class _RecordingCallback(BaseCallback):
    """Counts finished training episodes and hands every env step to the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def _on_training_start(self) -> None:
        self.agent = SB3Agent(self.model, self.model.get_vec_normalize_env())

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:  # written by Monitor: raw return "r" and length "l"
                self.recorder.episode_finished(float(info["episode"]["r"]))
        self.recorder.step(self.agent, self.num_timesteps)
        return not self.recorder.done


def _run(
    config: BaselineConfig,
    run: RunDir,
    model: BaseAlgorithm | None,
    eval_env: gym.Env,
    checkpoint: dict[str, Any] | None,
    on_metrics: MetricsHook | None,
) -> RunResult:
    if model is not None:
        recorder = Recorder(
            config, run, eval_env, _sb3_saver(run, model), checkpoint, on_metrics, config.algo
        )
        if checkpoint is None:
            recorder.save(0)
        else:
            _remove_unreferenced(run, checkpoint["files"])
            model.set_random_seed(config.seed + recorder.iteration)
        if not recorder.done and recorder.next_step == 0:
            recorder.step(SB3Agent(model, model.get_vec_normalize_env()), 0)
        remaining = config.total_steps - model.num_timesteps
        if remaining > 0 and not recorder.done:
            model.learn(remaining, callback=_RecordingCallback(recorder), reset_num_timesteps=False)
        model.get_env().close()
    else:
        agent = ZeroAgent(eval_env.action_space)
        if config.algo == "random":
            agent = RandomAgent(eval_env.action_space, config.seed)
        recorder = Recorder(
            config, run, eval_env, lambda _: {}, checkpoint, on_metrics, config.algo
        )
        if isinstance(agent, RandomAgent):
            if checkpoint is not None:
                agent.rng.bit_generator.state = checkpoint["numpy_rng"]
            recorder.extra_state = lambda: {"numpy_rng": agent.rng.bit_generator.state}
        if checkpoint is None:
            recorder.save(0)
        while not recorder.done:
            recorder.step(agent, recorder.next_step)
    recorder.close()
    eval_env.close()
    return RunResult(run.path, recorder.rows)
