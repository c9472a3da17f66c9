import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy

from dynaplan.agents.baselines import BaselineConfig, SB3Agent, run_baseline
from dynaplan.buffer import ReplayBuffer
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID, make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.evaluation import evaluate, evaluation_seed
from dynaplan.imitation.clone import CloneConfig, clone, mpc_demonstrations
from dynaplan.imitation.policy import (
    POLICY_FILE,
    _monte_carlo_returns,
    new_ppo,
    warm_start_ppo,
)
from dynaplan.loop import train
from dynaplan.rundir import RunDir
from tests.conftest import toy_config

GAIN = 1.5  # the "expert": a = clip(-GAIN * p, -1, 1), which steers the point mass home


def linear_controller(obs: np.ndarray) -> np.ndarray:
    return np.clip(-GAIN * obs, -1.0, 1.0).astype(np.float32)


def write_linear_expert_run(path, random_steps=100, expert_steps=2000, seed=0):
    """A run folder whose journal holds random transitions, then the linear controller's."""
    config = toy_config(random_steps=random_steps, total_steps=random_steps + expert_steps)
    run = RunDir.create(path)
    config.save(run.config)
    buffer = ReplayBuffer(2, 2)
    buffer.attach_journal(run.journal)
    env, rng = make_env(POINT_MASS_ID), np.random.default_rng(seed)
    episode, obs = 0, env.reset(seed=seed)[0]
    while len(buffer) < random_steps + expert_steps:
        expert = len(buffer) >= random_steps
        action = linear_controller(obs) if expert else rng.uniform(-1, 1, 2).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated, episode)
        obs = next_obs
        if terminated or truncated:
            episode += 1
            obs = env.reset(seed=seed + episode)[0]
    return run.path


def quiet(**overrides) -> CloneConfig:
    return CloneConfig(progress=False, eval_episodes=4, **overrides)


def test_demonstrations_skip_the_random_seed_data(tmp_path):
    run_dir = write_linear_expert_run(tmp_path / "run", random_steps=100, expert_steps=300)
    obs, actions = mpc_demonstrations(run_dir)
    assert obs.shape == (300, 2) and actions.shape == (300, 2)
    np.testing.assert_allclose(actions, linear_controller(obs))


def test_bc_recovers_a_linear_controller_and_saves_a_plain_sb3_ppo_file(tmp_path):
    run_dir = write_linear_expert_run(tmp_path / "run")
    result = clone(run_dir, tmp_path / "clone", quiet(seed=1))

    loaded = PPO.load(tmp_path / "clone" / POLICY_FILE)  # plain SB3, no dynaplan involved
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9)), -1).reshape(-1, 2)
    predicted, _ = loaded.predict(grid.astype(np.float32), deterministic=True)
    assert np.abs(predicted - linear_controller(grid)).max() < 0.15

    env = make_env(POINT_MASS_ID)
    seed = evaluation_seed(1, 0)  # the clone's own episodes
    again = evaluate(SB3Agent(loaded), env, 4, seed)
    assert again.returns == pytest.approx(result.report["clone"]["returns"])
    mean, _ = evaluate_policy(loaded, env, n_eval_episodes=3)
    expert = evaluate(_LinearAgent(), env, 4, seed).mean
    assert result.clone_return == pytest.approx(expert, abs=0.5) and np.isfinite(mean)
    report = json.loads((tmp_path / "clone" / "clone.json").read_text())
    assert report["pairs"] == 2000 and report["rounds"][0]["fit"]["val_loss"] < 0.01


class _LinearAgent:
    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray) -> np.ndarray:
        return linear_controller(obs)


def test_dagger_labels_the_states_the_policy_visits_with_the_run_planner(tmp_path):
    run_dir = tmp_path / "run"
    train(toy_config(total_steps=300), run_dir)
    config = quiet(method="dagger", dagger_rounds=2, dagger_steps=40, epochs=20)
    report = clone(run_dir, tmp_path / "dagger", config).report
    assert [r["pairs"] for r in report["rounds"]] == [100, 140, 180]
    assert all(np.isfinite(r["eval"]["return_mean"]) for r in report["rounds"])


def test_clone_errors_say_what_to_do(tmp_path):
    with pytest.raises(CheckpointError, match="not a dynaplan train run"):
        clone(tmp_path / "nowhere", tmp_path / "out", quiet())
    run_dir = write_linear_expert_run(tmp_path / "run", random_steps=100, expert_steps=0)
    with pytest.raises(ConfigError, match="no MPC-collected transitions"):
        clone(run_dir, tmp_path / "out", quiet())
    with pytest.raises(ConfigError, match="unknown clone method"):
        clone(run_dir, tmp_path / "out", quiet(method="gail"))


@pytest.fixture(scope="module")
def linear_clone(tmp_path_factory):
    root = tmp_path_factory.mktemp("clone")
    run_dir = write_linear_expert_run(root / "run")
    return clone(run_dir, root / "clone", CloneConfig(progress=False, eval_episodes=10))


def test_warm_started_ppo_starts_where_the_clone_is(tmp_path, linear_clone):
    config = BaselineConfig(
        env=POINT_MASS_ID,
        algo="ppo",
        total_steps=128,
        eval_every=64,
        eval_episodes=10,
        init=str(linear_clone.policy_dir),
        algo_kwargs={"n_steps": 64, "batch_size": 32, "n_epochs": 2, "learning_rate": 1e-4},
        progress=False,
    )
    rows = run_baseline(config, tmp_path / "ppo").metrics
    assert [r["env_steps"] for r in rows] == [0, 64, 128]
    clone_eval = linear_clone.report["clone"]
    noise = 3 * (clone_eval["return_std"] + rows[0]["eval_return_std"]) / np.sqrt(10)
    for row in rows[:2]:  # the cloned policy, and after PPO's first update
        assert abs(row["eval_return_mean"] - clone_eval["return_mean"]) < noise
    vanilla = dict(vars(config), init=None)
    fresh = run_baseline(BaselineConfig(**vanilla), tmp_path / "vanilla").metrics
    assert fresh[0]["eval_return_mean"] < clone_eval["return_mean"] - noise


def test_value_pretraining_fits_the_clones_returns(linear_clone):
    env = make_env(POINT_MASS_ID)
    model = new_ppo(env, seed=0)
    warm_start_ppo(model, linear_clone.policy_dir, log_std=-2.0)
    obs, returns = _monte_carlo_returns(model, env, 5, model.gamma, seed=123)  # held-out starts

    def critic_error() -> float:
        with torch.no_grad():
            values = model.policy.predict_values(torch.as_tensor(obs)).squeeze(-1).numpy()
        return float(np.mean((values - returns) ** 2))

    untrained = critic_error()
    warm_start_ppo(model, linear_clone.policy_dir, log_std=-2.0, value_episodes=10, env=env)
    assert critic_error() < 0.2 * untrained
    assert torch.allclose(model.policy.log_std, torch.full_like(model.policy.log_std, -2.0))


def test_init_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="PPO only"):
        BaselineConfig(env=POINT_MASS_ID, algo="sac", init="x").validate()
    config = BaselineConfig(env=POINT_MASS_ID, init=str(tmp_path), progress=False)
    with pytest.raises(CheckpointError, match="make one with dynaplan clone"):
        run_baseline(config, tmp_path / "run")


def test_clone_command_prints_the_result(tmp_path, capsys):
    run_dir = write_linear_expert_run(tmp_path / "run", expert_steps=300)
    out = tmp_path / "clone"
    args = ["clone", str(run_dir), "--out", str(out), "--epochs", "5", "--no-progress"]
    assert main(args) == 0
    assert "bc clone on 300 pairs" in capsys.readouterr().out
    assert (out / POLICY_FILE).is_file()
    assert main(args) == 2  # refuses to overwrite
    assert "already holds a clone" in capsys.readouterr().err
