import pytest

from dynaplan import loop
from dynaplan.agents.factory import build_policy_trainer, load_mpc_agent
from dynaplan.analysis.prior_check import check_returns
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.rundir import RunDir
from tests.conftest import toy_config


def test_each_prior_is_scored_under_each_model_as_the_check_would(tmp_path):
    config = toy_config(total_steps=400, snapshots=True)  # snapshots at 300 and 400
    config.value.enabled = config.policy.enabled = True
    config.value.updates = config.policy.updates = 20
    config.policy.check_horizon = 4
    run = loop.train(config, tmp_path / "run").run_dir
    matrix = check_returns(run, [300, 400])
    assert matrix.steps == [300, 400] and matrix.check_horizon == 4
    assert len(matrix.returns) == 2 and all(len(row) == 2 for row in matrix.returns)
    # the final row and column is the check of the final checkpoint, from every reset state
    agent, _ = load_mpc_agent(run, "cpu")
    env = make_env(config.env)
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    buffer = ReplayBuffer.from_journal(RunDir(run).journal, *dims)
    first = buffer.episode_starts()
    starts = buffer.batch(first).obs
    assert matrix.starts[1] == len(starts) > matrix.starts[0] > 0
    saved = TrainConfig.load(RunDir(run).config)
    expected = build_policy_trainer(saved, agent)
    assert matrix.returns[1][1] == pytest.approx(expected.start_state_return(starts))
    # the first row: the model at 300 and the reset states collected by then
    early, _ = load_mpc_agent(run, "cpu", at_steps=300)
    early_starts = buffer.batch(first[first < 300]).obs
    check = build_policy_trainer(saved, early)
    assert matrix.returns[0][0] == pytest.approx(check.start_state_return(early_starts))
    early.policy.load_state_dict(agent.policy.state_dict())
    assert matrix.returns[0][1] == pytest.approx(check.start_state_return(early_starts))


def test_a_run_without_a_checked_prior_is_refused(tmp_path):
    run = loop.train(toy_config(total_steps=300), tmp_path / "plain").run_dir
    with pytest.raises(ConfigError, match="no policy prior with a start-state check"):
        check_returns(run, [300])
