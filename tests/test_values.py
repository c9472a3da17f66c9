import dataclasses

import numpy as np
import pytest
import torch

from dynaplan.agents.factory import load_mpc_agent
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import ValueConfig
from dynaplan.errors import ConfigError
from dynaplan.loop import train
from dynaplan.rundir import RunDir
from dynaplan.values import ValueEnsemble, ValueTrainer
from tests.conftest import toy_config


def constant_reward_buffer(terminated: bool, size: int = 256) -> ReplayBuffer:
    """Random point-mass states, reward 1 everywhere, every transition terminal or none."""
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(2, 2)
    for i in range(size):
        obs, next_obs = rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 2)
        buffer.add(obs, np.zeros(2), 1.0, next_obs, terminated, False, i)
    return buffer


@pytest.mark.parametrize(("terminated", "expected"), [(False, 2.0), (True, 1.0)])
def test_td_finds_the_discounted_value_of_a_constant_reward(terminated, expected):
    torch.manual_seed(0)
    critic = ValueEnsemble(2, ensemble_size=3, hidden_size=32, num_layers=2)
    trainer = ValueTrainer(critic, lr=3e-3, gamma=0.5, tau=0.05)  # V = 1 / (1 - 0.5) = 2
    trainer.fit(constant_reward_buffer(terminated), np.random.default_rng(0), updates=1500)
    with torch.no_grad():
        values = critic(torch.rand(64, 2) * 2 - 1)
    np.testing.assert_allclose(values.numpy(), expected, atol=0.1)


def test_pessimism_subtracts_the_critics_disagreement():
    torch.manual_seed(0)
    critic = ValueEnsemble(2, ensemble_size=4, hidden_size=16, num_layers=1)
    obs = torch.rand(10, 2)
    with torch.no_grad():
        optimistic = critic(obs)
        critic.pessimism = 1.0
        members = critic.members(obs.expand(4, 10, 2))
        torch.testing.assert_close(critic(obs), optimistic - members.std(0))


def test_a_run_with_a_terminal_value_learns_it_checkpoints_it_and_plans_with_it(tmp_path):
    value = ValueConfig(enabled=True, ensemble_size=2, hidden_size=16, updates=50)
    config = dataclasses.replace(toy_config(total_steps=300), value=value)
    rows = train(config, tmp_path / "run").metrics
    assert all(np.isfinite(r["value_loss"]) for r in rows)
    agent, _ = load_mpc_agent(tmp_path / "run", "cpu")
    saved = RunDir(tmp_path / "run").load_checkpoint()["value"]
    for name, tensor in agent.terminal_value.state_dict().items():
        torch.testing.assert_close(tensor, saved[name])
    assert np.isfinite(agent.act(np.zeros(2, np.float32))).all()


def test_bad_value_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"value\.gamma"):
        dataclasses.replace(toy_config(), value=ValueConfig(gamma=1.0)).validate()
    with pytest.raises(ConfigError, match="gamma in"):
        ValueTrainer(ValueEnsemble(2), gamma=1.5)
    with pytest.raises(ConfigError, match="td_lambda"):
        ValueTrainer(ValueEnsemble(2), td_lambda=1.5)
    with pytest.raises(ConfigError, match=r"value\.td_steps"):
        dataclasses.replace(toy_config(), value=ValueConfig(td_steps=0)).validate()


def test_lambda_returns_stop_at_terminations_bootstrap_at_truncations_and_stay_in_episode():
    """Episode 0: rewards 1, 2, 3, terminated; episode 1: rewards 4, 5, cut off. With
    V̄ ≡ 10, γ = 0.9, λ = 0.5 and 3 steps, the λ-returns worked out by hand."""
    buffer = ReplayBuffer(1, 1)
    ends = [(False, False), (False, False), (True, False), (False, False), (False, True)]
    rewards = [1, 2, 3, 4, 5]
    for row, (reward, (terminated, truncated)) in enumerate(zip(rewards, ends, strict=True)):
        buffer.add(np.zeros(1), np.zeros(1), reward, np.zeros(1), terminated, truncated, row // 3)
    trainer = ValueTrainer(ValueEnsemble(1, 1, 8, 1), gamma=0.9, td_steps=3, td_lambda=0.5)
    with torch.no_grad():
        trainer.target.head.weight.zero_()
        trainer.target.head.bias.fill_(10.0)
    data = buffer.batch(np.arange(5))
    targets = trainer.lambda_returns(
        data,
        data.terminated | torch.as_tensor(buffer.truncated),
        torch.as_tensor(buffer.episode),
        torch.arange(5)[None],
    )
    # row 0: G1 = 1 + 9 = 10, G2 = 1 + 1.8 + 8.1 = 10.9, G3 = 1 + 1.8 + 2.43 = 5.23 (terminal)
    # row 1: G1 = 11, G2 = G3 = 2 + 2.7 = 4.7; row 2: 3 (terminal) at every k
    # row 3: G1 = 13, G2 = G3 = 4 + 4.5 + 8.1 = 16.6 (cut off, bootstrapped); row 4: G = 14
    expected = [
        0.5 * 10 + 0.25 * 10.9 + 0.25 * 5.23,
        0.5 * 11 + 0.5 * 4.7,
        3.0,
        0.5 * 13 + 0.5 * 16.6,
        14.0,
    ]
    torch.testing.assert_close(targets[0], torch.tensor(expected))
    one_step = ValueTrainer(ValueEnsemble(1, 1, 8, 1), gamma=0.9)  # TD(0): r + γ (1 − d) V̄
    one_step.target.load_state_dict(trainer.target.state_dict())
    td0 = one_step.lambda_returns(
        data, data.terminated, torch.as_tensor(buffer.episode), torch.arange(5)[None]
    )
    torch.testing.assert_close(td0[0], torch.tensor([10.0, 11.0, 3.0, 13.0, 14.0]))


def test_model_expansion_continues_each_target_through_the_model_under_the_policy():
    """An identity model and a zero policy: the target of (s, r, s') is
    ``r + γ (1 − d) (r̂ + γ alive r̂ + γ² alive² V̄(s'))`` with ``r̂ = reward(s', 0, s')``."""
    from dynaplan import tasks
    from dynaplan.envs import POINT_MASS_ID
    from dynaplan.models import DynamicsModel
    from dynaplan.values import ModelExpansion

    model = DynamicsModel(2, 2, hidden_size=8, num_layers=1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # predicts a zero delta: s' stays where it is
    task = tasks.get(POINT_MASS_ID)
    expansion = ModelExpansion(model, task, lambda obs: torch.zeros_like(obs), steps=2)
    trainer = ValueTrainer(ValueEnsemble(2, 2, 8, 1), gamma=0.9, expansion=expansion)
    with torch.no_grad():
        trainer.target.head.weight.zero_()
        trainer.target.head.bias.fill_(10.0)
    buffer = constant_reward_buffer(terminated=False, size=6)
    data = buffer.batch(np.arange(6))
    rows = torch.tensor([[0, 1, 2], [3, 4, 5]])
    targets = trainer.expanded_returns(data, rows)
    s = data.next_obs[rows]
    r_hat = task.reward(s, torch.zeros_like(s), s)
    alive = (~task.terminated(s)).float()
    expected = 1.0 + 0.9 * (r_hat + 0.9 * alive * r_hat + 0.81 * alive**2 * 10.0)
    torch.testing.assert_close(targets, expected)
    with pytest.raises(ConfigError, match="expansion"):
        ValueTrainer(ValueEnsemble(2), td_steps=3, expansion=expansion)
    with pytest.raises(ConfigError, match=r"policy\.enabled"):
        dataclasses.replace(toy_config(), value=ValueConfig(enabled=True, expansion=2)).validate()


def test_a_run_with_td_lambda_and_model_expansion_trains_its_critics(tmp_path):
    for name, value in (("lambda", dict(td_steps=4)), ("mve", dict(expansion=2))):
        config = toy_config(total_steps=300)
        config.value = ValueConfig(enabled=True, updates=50, **value)
        config.policy.enabled, config.policy.updates = True, 20
        rows = train(config, tmp_path / name).metrics
        assert np.isfinite(rows[-1]["value_loss"]), name
        row = rows[-1]  # the value's and the prior's shares of the iteration's training
        assert row["value_fit_s"] > 0 and row["policy_fit_s"] > 0, name
        assert row["value_fit_s"] + row["policy_fit_s"] < row["model_fit_s"], name
