"""The cloned policy *is* an SB3 PPO ``MlpPolicy``: regress its actor, warm-start PPO with it.

Cloning trains the actor of a freshly built ``stable_baselines3.PPO("MlpPolicy", env)``
directly (features extractor, ``mlp_extractor.policy_net`` and ``action_net``), so the
saved ``.zip`` is an ordinary PPO file and its weights load into PPO without conversion.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import Tensor, nn
from tqdm.auto import tqdm

from dynaplan.errors import CheckpointError, ConfigError

POLICY_FILE = "policy.zip"
"""A clone's folder holds its SB3 PPO file under this name."""


def new_ppo(env: gym.Env, seed: int, device: str = "cpu") -> PPO:
    """SB3 PPO with its default ``MlpPolicy`` for ``env`` (the clone's architecture)."""
    return PPO("MlpPolicy", env, seed=seed, device=device, verbose=0)


def action_mean(policy: ActorCriticPolicy, obs: Tensor) -> Tensor:
    """Differentiable deterministic action ``[N, A]`` (the Gaussian's mean) for ``obs: [N, S]``."""
    return policy.get_distribution(obs).distribution.mean


def actor_parameters(policy: ActorCriticPolicy) -> list[nn.Parameter]:
    """The parameters behind :func:`action_mean` (not the log-std, not the critic)."""
    modules = (policy.pi_features_extractor, policy.mlp_extractor.policy_net, policy.action_net)
    return [p for module in modules for p in module.parameters()]


@dataclass
class FitStats:
    """Outcome of one supervised fit: best validation loss and the epochs it took."""

    train_loss: float
    val_loss: float
    epochs: int


def fit_actor(
    policy: ActorCriticPolicy,
    obs: np.ndarray,
    actions: np.ndarray,
    action_scale: np.ndarray,
    rng: np.random.Generator,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    val_fraction: float,
    patience: int,
    progress: bool = False,
) -> FitStats:
    """Regress the actor's mean on ``actions [N, A]`` for ``obs [N, S]`` (min Σ‖π(s) − a‖²).

    The squared error is taken in units of ``action_scale`` (half the action range), on a
    random ``val_fraction`` held out; training stops when the validation loss has not improved
    for ``patience`` epochs and the best weights are restored.
    """
    if len(obs) != len(actions) or len(obs) < 2:
        raise ConfigError(f"need at least 2 (obs, action) pairs of equal count, got {len(obs)}")
    device = policy.device
    order = rng.permutation(len(obs))
    num_val = min(max(1, int(val_fraction * len(obs))), len(obs) - 1)
    val, train = order[:num_val], order[num_val:]
    x = torch.as_tensor(obs, dtype=torch.float32, device=device)
    y = torch.as_tensor(actions / action_scale, dtype=torch.float32, device=device)
    scale = torch.as_tensor(action_scale, dtype=torch.float32, device=device)
    params = actor_parameters(policy)
    optimizer = torch.optim.Adam(params, lr=lr)

    def loss_of(rows: np.ndarray) -> Tensor:
        return (action_mean(policy, x[rows]) / scale - y[rows]).square().sum(-1).mean()

    best = (float("inf"), float("nan"), 0, copy.deepcopy(policy.state_dict()))
    bar = tqdm(range(1, epochs + 1), desc="clone", unit="epoch", disable=not progress)
    for epoch in bar:
        losses, shuffled = [], train[rng.permutation(len(train))]
        for start in range(0, len(train), batch_size):
            loss = loss_of(shuffled[start : start + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            val_loss = loss_of(val).item()
        if not np.isfinite(val_loss):
            raise ConfigError("behaviour cloning diverged (non-finite loss); lower the lr")
        if val_loss < best[0]:
            best = (val_loss, float(np.mean(losses)), epoch, copy.deepcopy(policy.state_dict()))
        bar.set_postfix(train=f"{np.mean(losses):.4f}", val=f"{val_loss:.4f}")
        if epoch - best[2] >= patience:
            break
    bar.close()
    policy.load_state_dict(best[3])
    return FitStats(train_loss=best[1], val_loss=best[0], epochs=best[2])


def load_clone(policy_dir: str | Path, device: str = "cpu") -> PPO:
    """The PPO file a ``dynaplan clone`` folder holds."""
    path = Path(policy_dir) / POLICY_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no {POLICY_FILE} in {policy_dir}; make one with dynaplan clone RUN_DIR --out "
            f"{policy_dir}"
        )
    return PPO.load(path, device=device)


def warm_start_ppo(
    model: PPO,
    policy_dir: str | Path,
    log_std: float,
    value_episodes: int = 0,
    env: gym.Env | None = None,
    seed: int = 0,
) -> None:
    """Start ``model``'s policy from a clone; optionally pre-train its value function.

    The whole policy (actor and critic) is copied, then the log-std is set to ``log_std`` so
    the first rollouts stay close to the clone. With ``value_episodes > 0`` the critic is
    regressed on the discounted Monte-Carlo returns of that many stochastic clone rollouts in
    ``env`` (env steps that do not count towards PPO's budget), so the first updates' advantages
    are not dominated by an untrained critic.
    """
    clone = load_clone(policy_dir, str(model.device))
    try:
        model.policy.load_state_dict(clone.policy.state_dict())
    except RuntimeError as exc:
        raise ConfigError(
            f"the clone in {policy_dir} does not fit this PPO policy (clones use SB3's default "
            f"MlpPolicy; use --preset default): {exc}"
        ) from exc
    with torch.no_grad():
        model.policy.log_std.fill_(log_std)
    if value_episodes > 0:
        if env is None:
            raise ConfigError("pre-training the value function needs an env")
        obs, returns = _monte_carlo_returns(model, env, value_episodes, model.gamma, seed)
        _fit_critic(model.policy, obs, returns, np.random.default_rng(seed))


def _monte_carlo_returns(
    model: PPO, env: gym.Env, episodes: int, gamma: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Visited observations ``[N, S]`` and their discounted returns-to-go ``[N]``."""
    all_obs, all_returns = [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        visited, rewards, done = [], [], False
        while not done:
            action, _ = model.predict(obs, deterministic=False)
            visited.append(obs)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            done = terminated or truncated
        returns, running = np.empty(len(rewards)), 0.0
        for t in reversed(range(len(rewards))):
            running = rewards[t] + gamma * running
            returns[t] = running
        all_obs.append(np.asarray(visited, np.float32))
        all_returns.append(returns)
    return np.concatenate(all_obs), np.concatenate(all_returns).astype(np.float32)


def _fit_critic(
    policy: ActorCriticPolicy,
    obs: np.ndarray,
    returns: np.ndarray,
    rng: np.random.Generator,
    updates: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
) -> None:
    """``updates`` Adam steps of the critic on minibatches of ``(obs [N, S], returns [N])``."""
    x = torch.as_tensor(obs, device=policy.device)
    y = torch.as_tensor(returns, device=policy.device)
    modules = (policy.vf_features_extractor, policy.mlp_extractor.value_net, policy.value_net)
    optimizer = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=lr)
    for _ in range(updates):
        rows = rng.integers(len(x), size=min(batch_size, len(x)))
        loss = (policy.predict_values(x[rows]).squeeze(-1) - y[rows]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
