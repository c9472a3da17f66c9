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
    # each snapshot's own prior under its own model: the check return the run logged there
    logged = [row["policy_check_return"] for row in RunDir(run).read_metrics()]
    assert [matrix.returns[0][0], matrix.returns[1][1]] == pytest.approx(logged, rel=1e-6)
    # the final prior under the first model, from the reset states it was fitted with (200)
    env = make_env(config.env)
    dims = env.observation_space.shape[0], env.action_space.shape[0]
    buffer = ReplayBuffer.from_journal(RunDir(run).journal, *dims)
    first = buffer.episode_starts()
    early_starts = buffer.batch(first[first < 200]).obs
    assert matrix.starts == [len(early_starts), int((first < 300).sum())]
    early, _ = load_mpc_agent(run, "cpu", at_steps=300)
    early.policy.load_state_dict(load_mpc_agent(run, "cpu")[0].policy.state_dict())
    check = build_policy_trainer(TrainConfig.load(RunDir(run).config), early)
    assert matrix.returns[0][1] == pytest.approx(check.start_state_return(early_starts))


def test_a_run_without_a_checked_prior_is_refused(tmp_path):
    run = loop.train(toy_config(total_steps=300), tmp_path / "plain").run_dir
    with pytest.raises(ConfigError, match="no policy prior with a start-state check"):
        check_returns(run, [300])
