"""How far a learned dynamics model drifts: the source paper's model-error figures (Fig. 5–8).

One-step predictions, open-loop rollouts from chosen start points, and the absolute error of
every ``H``-step open-loop prediction over a whole episode, per feature and horizon.

Time conventions: ``obs [T, S]`` are consecutive states ``s_0 … s_{T-1}`` of one episode and
``actions[t]`` moves ``s_t`` to ``s_{t+1}``. An :class:`Episode` keeps gymnasium's
``(obs, action, next_obs)`` rows; :attr:`Episode.states` ``[T + 1, S]`` joins them into
``s_0 … s_T``. Predictions always use expectation propagation, in eval mode, without grad.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from dynaplan.agents.factory import build_model
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import TrainConfig
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.models import DynamicsModel
from dynaplan.rundir import RunDir

# Observation indices of Gymnasium's v5 MuJoCo envs with their default observation
# (current x/y positions excluded); checked against the envs' documented tables.
_FEATURES: dict[str, dict[str, int]] = {
    "Hopper": {"torso height": 0, "torso angle": 1, "x velocity": 5},
    "InvertedPendulum": {"cart position": 0, "pole angle": 1, "pole angular velocity": 3},
    "Walker2d": {"torso height": 0, "torso angle": 1, "x velocity": 8},
    "Ant": {"torso height": 0, "x velocity": 13},
    "HalfCheetah": {"x velocity": 8},
}
# Positions prepended when ``exclude_current_positions_from_observation=False``.
_EXCLUDED_POSITIONS = {"Hopper": 1, "Walker2d": 1, "HalfCheetah": 1, "Ant": 2}

ArrayLike = np.ndarray | Tensor


def default_features(
    env_id: str, obs_dim: int, env_kwargs: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Named observation indices worth plotting for ``env_id`` (else the first three)."""
    name = env_id.rsplit("/", 1)[-1].split("-v")[0]
    features = _FEATURES.get(name)
    shift = 0
    if (env_kwargs or {}).get("exclude_current_positions_from_observation") is False:
        shift = _EXCLUDED_POSITIONS.get(name, 0)
    if features is None or max(features.values()) + shift >= obs_dim:
        return {f"obs[{i}]": i for i in range(min(3, obs_dim))}
    return {key: index + shift for key, index in features.items()}


# -- predictions -------------------------------------------------------------------------------


def _as_model_tensor(model: DynamicsModel, x: ArrayLike) -> Tensor:
    param = next(model.parameters())
    return torch.as_tensor(x, dtype=param.dtype, device=param.device)


@torch.no_grad()
def one_step_predictions(model: DynamicsModel, obs: ArrayLike, actions: ArrayLike) -> np.ndarray:
    """Predicted next states ``[T, S]`` of ``obs [T, S]`` under ``actions [T, A]``, in one call."""
    model.eval()
    pred = model.step(_as_model_tensor(model, obs), _as_model_tensor(model, actions))
    return pred.cpu().numpy()


@torch.no_grad()
def open_loop_predictions(
    model: DynamicsModel, obs: ArrayLike, actions: ArrayLike, start: int, horizon: int
) -> np.ndarray:
    """Open-loop states ``[h, S]`` predicted from the true ``obs[start]`` (``obs [T, S]``).

    Row ``k`` predicts ``s_{start+k+1}`` after the recorded ``actions[start : start+k+1]``
    (``actions [T, A]``); ``h = min(horizon, T - start)`` stops at the episode's end.
    """
    if not 0 <= start < len(actions):
        raise ConfigError(f"start {start} is outside the episode's {len(actions)} actions")
    model.eval()
    state = _as_model_tensor(model, obs[start : start + 1])  # [1, S]
    rows = []
    for action in _as_model_tensor(model, actions[start : start + horizon]):
        state = model.step(state, action[None])
        rows.append(state)
    return torch.cat(rows).cpu().numpy()


def _check_horizons(horizons: Sequence[int]) -> None:
    if not horizons or min(horizons) < 1:
        raise ConfigError(f"horizons must be positive integers, got {list(horizons)}")


@torch.no_grad()
def horizon_errors(
    model: DynamicsModel, obs: ArrayLike, actions: ArrayLike, horizons: Sequence[int]
) -> dict[int, np.ndarray]:
    """Absolute errors ``{H: [T, S]}`` of the ``H``-step open-loop predictions ending at each t.

    Row ``t`` of ``errors[H]`` is ``|ŝ_t - obs[t]|`` for ``ŝ_t`` rolled out from the true
    ``obs[t - H]`` with ``actions[t - H : t]`` (NaN where ``t < H``). ``obs [T, S]``;
    ``actions [T - 1, A]`` or ``[T, A]`` (a last action without a successor state is unused).
    All start points move together: one ``model.step`` per step, on a shrinking batch.
    """
    _check_horizons(horizons)
    model.eval()
    obs_t, act_t = _as_model_tensor(model, obs), _as_model_tensor(model, actions)
    n = obs_t.shape[0]
    if act_t.shape[0] < n - 1:
        raise ValueError(f"{n} states need at least {n - 1} actions, got {act_t.shape[0]}")
    errors = {h: np.full(tuple(obs_t.shape), np.nan, np.float32) for h in horizons}
    pred = obs_t  # row i: the prediction started at obs[i]
    for k in range(1, min(max(horizons), n - 1) + 1):
        pred = model.step(pred[: n - k], act_t[k - 1 : n - 1])  # now predicts obs[i + k]
        if k in errors:
            errors[k][k:] = (pred - obs_t[k:]).abs().cpu().numpy()
    return errors


# -- one episode's analysis --------------------------------------------------------------------


@dataclass
class Episode:
    """One episode's transitions: ``obs [T, S]``, ``actions [T, A]``, ``next_obs [T, S]``."""

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    label: str = ""

    @property
    def states(self) -> np.ndarray:
        """``[T + 1, S]``: ``s_0 … s_T``."""
        return np.concatenate([self.obs, self.next_obs[-1:]])

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class ModelErrorReport:
    """The data behind the figures; times index :attr:`states` (``t = 0 … T``)."""

    features: dict[str, int]
    """Feature name -> observation index."""
    states: np.ndarray
    """``[T + 1, S]`` true states."""
    one_step: np.ndarray
    """``[T, S]`` one-step predictions of ``states[1:]``."""
    open_loop: dict[int, np.ndarray]
    """Start ``t0`` -> ``[h, S]`` open-loop predictions of ``states[t0 + 1 : t0 + 1 + h]``."""
    errors: dict[int, np.ndarray]
    """Horizon ``H`` -> ``[T + 1, S]`` absolute errors, NaN where ``t < H``."""
    label: str = ""

    def mean_abs_error(self) -> dict[str, dict[int, float]]:
        """Feature -> horizon -> mean absolute error over the episode (NaN if no t >= H)."""
        return {
            name: {h: _nanmean(err[:, i]) for h, err in self.errors.items()}
            for name, i in self.features.items()
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary; the growth ratio divides the longest by the shortest horizon."""
        mae = self.mean_abs_error()
        short, long = min(self.errors), max(self.errors)
        return {
            "label": self.label,
            "steps": len(self.one_step),
            "features": self.features,
            "horizons": list(self.errors),
            "starts": list(self.open_loop),
            "mean_abs_error": {
                name: {str(h): _json_float(v) for h, v in by_h.items()}
                for name, by_h in mae.items()
            },
            "mean_abs_error_all_dims": {
                str(h): _json_float(_nanmean(err)) for h, err in self.errors.items()
            },
            "growth": {
                "short_horizon": short,
                "long_horizon": long,
                "ratio": {
                    name: _json_float(by_h[long] / by_h[short] if by_h[short] > 0 else math.nan)
                    for name, by_h in mae.items()
                },
            },
        }


def analyse_episode(
    model: DynamicsModel,
    obs: ArrayLike,
    actions: ArrayLike,
    next_obs: ArrayLike,
    features: Mapping[str, int],
    horizons: Sequence[int] = (1, 5, 10, 20),
    starts: Sequence[int] = (0, 65),
    open_loop_steps: int | None = None,
    label: str = "",
) -> ModelErrorReport:
    """Every figure's data for one episode (``obs, next_obs [T, S]``, ``actions [T, A]``).

    Open-loop rollouts run ``open_loop_steps`` (default: the longest horizon) from each start;
    a start too late for that is moved back to ``T - open_loop_steps`` (duplicates dropped).
    """
    _check_horizons(horizons)
    if open_loop_steps is not None and open_loop_steps < 1:
        raise ConfigError(f"open_loop_steps must be positive, got {open_loop_steps}")
    episode = Episode(*(np.asarray(x, np.float32) for x in (obs, actions, next_obs)), label)
    num_steps, obs_dim = episode.obs.shape
    if num_steps == 0:
        raise ConfigError("the episode is empty")
    if obs_dim != model.obs_dim or episode.actions.shape[1] != model.act_dim:
        raise ConfigError(
            f"the model expects observations of size {model.obs_dim} and actions of size "
            f"{model.act_dim}, the episode has {obs_dim} and {episode.actions.shape[1]}"
        )
    if not np.allclose(episode.obs[1:], episode.next_obs[:-1], atol=1e-6):
        raise ValueError("obs[t + 1] != next_obs[t]: the rows are not one consecutive episode")
    bad = [i for i in features.values() if not 0 <= i < obs_dim]
    if bad:
        raise ConfigError(f"feature indices {bad} are outside the observation (size {obs_dim})")
    steps = open_loop_steps or max(horizons)
    latest = max(num_steps - steps, 0)
    starts = list(dict.fromkeys(min(max(s, 0), latest) for s in starts))
    states = episode.states
    return ModelErrorReport(
        features=dict(features),
        states=states,
        one_step=one_step_predictions(model, episode.obs, episode.actions),
        open_loop={
            s: open_loop_predictions(model, episode.obs, episode.actions, s, steps) for s in starts
        },
        errors=horizon_errors(model, states, episode.actions, sorted(set(horizons))),
        label=label,
    )


# -- figures and files -------------------------------------------------------------------------


def write_report(report: ModelErrorReport, out_dir: str | Path) -> list[Path]:
    """Write the figures, ``model_error.json`` and ``model_error.csv``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [_plot_one_step(report, out / "one_step.png")]
    paths += [
        _plot_open_loop(report, start, out / f"open_loop_t{start}.png")
        for start in report.open_loop
    ]
    paths.append(_plot_errors(report, out / "error_vs_time.png"))
    summary = out / "model_error.json"
    summary.write_text(json.dumps(report.summary(), indent=2) + "\n")
    paths += [summary, _write_csv(report, out / "model_error.csv")]
    return paths


def _panels(report: ModelErrorReport, title: str) -> tuple[plt.Figure, list[plt.Axes]]:
    rows = len(report.features)
    fig, axes = plt.subplots(rows, 1, figsize=(7, 2.2 * rows + 0.6), sharex=True, squeeze=False)
    fig.suptitle(f"{title} · {report.label}" if report.label else title)
    for ax, name in zip(axes[:, 0], report.features, strict=True):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time step t")
    return fig, list(axes[:, 0])


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_one_step(report: ModelErrorReport, path: Path) -> Path:
    """Fig. 5: one-step predictions against the true states."""
    fig, axes = _panels(report, "one-step predictions")
    t = np.arange(len(report.states))
    for ax, i in zip(axes, report.features.values(), strict=True):
        ax.plot(t, report.states[:, i], color="k", label="true")
        ax.plot(t[1:], report.one_step[:, i], "--", color="C3", label="1-step prediction")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def _plot_open_loop(report: ModelErrorReport, start: int, path: Path) -> Path:
    """Fig. 6 and 7: an open-loop rollout from ``start`` against the true states."""
    pred = report.open_loop[start]
    t = np.arange(start, start + len(pred) + 1)
    fig, axes = _panels(report, f"open-loop prediction from t0 = {start}")
    for ax, i in zip(axes, report.features.values(), strict=True):
        ax.plot(t, report.states[t, i], color="k", marker=".", label="true")
        predicted = np.concatenate([report.states[start : start + 1, i], pred[:, i]])
        ax.plot(t, predicted, "--", color="C0", marker=".", label="open loop")
    axes[0].legend(fontsize=8)
    return _save(fig, path)


def _plot_errors(report: ModelErrorReport, path: Path) -> Path:
    """Fig. 8: absolute error over the episode, one line per horizon."""
    fig, axes = _panels(report, "open-loop absolute error by horizon H")
    t = np.arange(len(report.states))
    for ax, i in zip(axes, report.features.values(), strict=True):
        for h, err in report.errors.items():
            ax.plot(t, err[:, i], label=f"H = {h}")
        if any((err[:, i] > 0).any() for err in report.errors.values()):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8, ncol=len(report.errors))
    return _save(fig, path)


def _write_csv(report: ModelErrorReport, path: Path) -> Path:
    """One row per time step: true value, one-step prediction and H-step errors per feature."""
    one_step = np.concatenate([np.full_like(report.states[:1], np.nan), report.one_step])
    columns: dict[str, np.ndarray] = {"t": np.arange(len(report.states))}
    for name, i in report.features.items():
        columns[f"{name} true"] = report.states[:, i]
        columns[f"{name} 1-step prediction"] = one_step[:, i]
        for h, err in report.errors.items():
            columns[f"{name} abs error H={h}"] = err[:, i]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(zip(*(col.tolist() for col in columns.values()), strict=True))
    return path


def _nanmean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- data sources ------------------------------------------------------------------------------


def select_episode(
    obs: np.ndarray,
    actions: np.ndarray,
    next_obs: np.ndarray,
    episode_ids: np.ndarray,
    episode: int | None = None,
    source: str = "buffer",
) -> Episode:
    """Episode ``episode`` (by id) of columns ``[N, ·]``; by default the longest one."""
    ids, counts = np.unique(episode_ids, return_counts=True)
    if len(ids) == 0:
        raise ConfigError(f"the {source} holds no transitions")
    if episode is None:
        episode = int(ids[np.argmax(counts)])
    elif episode not in ids:
        raise ConfigError(
            f"no episode {episode} in the {source}; its episodes are {ids.min()}…{ids.max()}"
        )
    rows = np.flatnonzero(episode_ids == episode)
    label = f"episode {episode} of {source}"
    return Episode(obs[rows], actions[rows], next_obs[rows], label)


def episode_from_buffer(buffer: ReplayBuffer, episode: int | None = None) -> Episode:
    """An episode of a replay buffer (by default the longest)."""
    return select_episode(buffer.obs, buffer.action, buffer.next_obs, buffer.episode, episode)


def episode_from_journal(
    path: str | Path, obs_dim: int, act_dim: int, episode: int | None = None
) -> Episode:
    """An episode of a run's transition journal (the file is only read)."""
    path = Path(path)
    buffer = ReplayBuffer.from_journal(path, obs_dim, act_dim)
    return select_episode(
        buffer.obs, buffer.action, buffer.next_obs, buffer.episode, episode, path.parent.name
    )


def collect_episode(
    env: gym.Env, policy: Callable[[np.ndarray], np.ndarray], seed: int, label: str = ""
) -> Episode:
    """Run ``policy`` (observation ``[S]`` -> action ``[A]``) for one episode of ``env``."""
    low, high = env.action_space.low, env.action_space.high
    obs_rows, action_rows, next_rows = [], [], []
    obs, _ = env.reset(seed=seed)
    done = False
    while not done:
        action = np.clip(policy(obs), low, high).astype(np.float32)
        next_obs, _, terminated, truncated, _ = env.step(action)
        obs_rows.append(obs)
        action_rows.append(action)
        next_rows.append(next_obs)
        obs, done = next_obs, terminated or truncated
    return Episode(*(np.asarray(r, np.float32) for r in (obs_rows, action_rows, next_rows)), label)


def load_run_model(
    run_dir: str | Path, device: str = "cpu"
) -> tuple[DynamicsModel, TrainConfig, RunDir]:
    """The trained model of a run folder's latest checkpoint, its config and the folder."""
    run = RunDir.open(run_dir)
    config = TrainConfig.load(run.config)
    checkpoint = run.load_checkpoint(device)
    if checkpoint.get("iteration") == 1 and not checkpoint.get("trained"):
        raise CheckpointError(f"{run.path} has no trained model yet; let the run train first")
    state = checkpoint["model"]
    obs_dim = state["target_norm.mean"].shape[0]
    model = build_model(config, obs_dim, state["input_norm.mean"].shape[0] - obs_dim)
    model.load_state_dict(state)
    return model.to(device).eval(), config, run
