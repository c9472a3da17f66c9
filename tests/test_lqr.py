import numpy as np
import pytest
import torch
from torch import Tensor, nn

from dynaplan import tasks
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.config import PlannerConfig, TrainConfig, ValueConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.loop import train
from dynaplan.lqr import LQRValue
from dynaplan.rundir import RunDir
from dynaplan.tasks import Task
from dynaplan.types import ValueKind
from tests.conftest import toy_config

# InvertedPendulum-v5 linearised upright (finite differences of MuJoCo, dt = 0.04)
PENDULUM_A = [
    [1.0, -0.0023, 0.0399, 0.0001],
    [0.0, 1.0234, 0.0002, 0.0387],
    [0.0, -0.1123, 0.9967, 0.0053],
    [0.0, 1.1573, 0.0076, 0.945],
]
PENDULUM_B = [[0.0067], [-0.0154], [0.3317], [-0.7606]]


class LinearModel(nn.Module):
    """``s' = A s + B a``, with the ``step`` of a dynamics model."""

    def __init__(self, a, b) -> None:
        super().__init__()
        self.a, self.b = torch.tensor(a), torch.tensor(b)

    def step(self, obs: Tensor, act: Tensor, *_) -> Tensor:
        return obs @ self.a.T + act @ self.b.T


@pytest.fixture(scope="module")
def pendulum_task() -> Task:
    env = make_env("InvertedPendulum-v5")
    task = tasks.get("InvertedPendulum-v5", env)
    env.close()
    return task


def test_the_quadratic_cost_comes_from_the_tasks_reward(pendulum_task):
    value = LQRValue(pendulum_task, gamma=0.9)
    expected = np.diag([pendulum_task.cart_weight / pendulum_task.max_cart**2, 25.0, 0, 0])
    np.testing.assert_allclose(value.state_cost.numpy(), expected, atol=1e-5)
    assert value.offset == pytest.approx(1 / (1 - 0.9))  # r* = 1 upright, centred


def test_the_value_satisfies_bellmans_equation_on_the_linear_pendulum(pendulum_task):
    gamma = 0.95
    value = LQRValue(pendulum_task, gamma)
    value.fit(LinearModel(PENDULUM_A, PENDULUM_B))
    assert value.converged and value.closed_loop_radius < 1  # the -θ² objective alone is not
    model, rng = LinearModel(PENDULUM_A, PENDULUM_B), np.random.default_rng(0)
    obs = torch.tensor(rng.normal(scale=[0.2, 0.02, 0.1, 0.1], size=(8, 4)), dtype=torch.float32)
    actions = torch.linspace(-3, 3, 6001)[:, None]  # V(s) = max_a r(s, a, s') + γ V(s')
    for row in obs:
        start = row.expand(len(actions), 4)
        next_obs = model.step(start, actions)
        backup = pendulum_task.reward(start, actions, next_obs) + gamma * value(next_obs)
        assert backup.max().item() == pytest.approx(value(row[None]).item(), rel=1e-4, abs=1e-4)


def test_a_model_it_cannot_stabilise_falls_back_to_the_one_step_cost(pendulum_task):
    value = LQRValue(pendulum_task, gamma=0.99)
    unstable = LinearModel(2 * np.eye(4, dtype=np.float32), np.zeros((4, 1), np.float32))
    with pytest.warns(RuntimeWarning, match="did not converge"):
        value.fit(unstable)
    assert not value.converged
    torch.testing.assert_close(value.cost_to_go, value.state_cost)


def test_tasks_without_an_equilibrium_are_refused():
    task = Task.from_functions(lambda obs, act, next_obs: -next_obs.square().sum(-1))
    with pytest.raises(ConfigError, match=r"value\.kind critic"):
        LQRValue(task)


def test_critic_only_settings_are_refused_with_lqr():
    config = TrainConfig(value=ValueConfig(enabled=True, kind=ValueKind.LQR, td_steps=3))
    with pytest.raises(ConfigError, match=r"value\.kind lqr learns nothing"):
        config.validate()


@pytest.mark.filterwarnings("ignore:the LQR value's Riccati")  # the first tiny model may not
def test_a_pendulum_run_fits_the_value_to_its_model_and_checkpoints_it(tmp_path):
    config = toy_config(
        env="InvertedPendulum-v5",
        eval_episodes=1,
        search=PlannerConfig(num_candidates=4, iterations=2),
        value=ValueConfig(enabled=True, kind=ValueKind.LQR),
    )
    train(config, tmp_path / "run")
    agent, _ = load_mpc_agent(tmp_path / "run", "cpu")
    value = agent.terminal_value
    assert isinstance(value, LQRValue)
    saved = RunDir(tmp_path / "run").load_checkpoint()["value"]
    torch.testing.assert_close(value.cost_to_go, saved["cost_to_go"])
    assert not torch.allclose(value.cost_to_go, value.state_cost)  # fitted, not the fallback
    refit = LQRValue(agent.task, config.value.gamma)
    refit.fit(agent.model)  # the saved P is the one the saved model gives
    torch.testing.assert_close(refit.cost_to_go, value.cost_to_go)
