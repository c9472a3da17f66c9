import numpy as np
import pytest
import torch

from dynaplan import loop, tasks
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.buffer import ReplayBuffer
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID, make_env
from dynaplan.models import DynamicsModel, ModelTrainer
from dynaplan.policy import PolicyAgent, PolicyPrior, PolicyTrainer, propose
from tests.conftest import toy_config

LOW, HIGH = np.array([-1.0, -0.5]), np.array([1.0, 0.5])


def test_actions_stay_inside_the_bounds():
    torch.manual_seed(0)
    policy = PolicyPrior(2, LOW, HIGH, hidden_size=16)
    actions = policy(1e3 * torch.randn(500, 2))
    assert actions.shape == (500, 2)
    low, high = torch.as_tensor(LOW).float(), torch.as_tensor(HIGH).float()
    assert (actions >= low).all() and (actions <= high).all()


def point_mass_model_and_data() -> tuple[DynamicsModel, ReplayBuffer]:
    """A small model fitted to 600 random point-mass transitions."""
    env, rng = make_env(POINT_MASS_ID), np.random.default_rng(0)
    buffer = ReplayBuffer(2, 2)
    obs, _ = env.reset(seed=0)
    episode = 0
    for _ in range(600):
        action = rng.uniform(-1, 1, size=2)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated, episode)
        obs = next_obs
        if terminated or truncated:
            obs, episode = env.reset()[0], episode + 1
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, hidden_size=32, num_layers=2)
    ModelTrainer(model).fit(buffer, rng, max_epochs=60, batch_size=64)
    return model.eval(), buffer


def test_training_through_the_model_raises_the_imagined_return_and_only_moves_the_policy():
    model, buffer = point_mass_model_and_data()
    torch.manual_seed(0)
    policy = PolicyPrior(2, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden_size=32)
    trainer = PolicyTrainer(policy, model, tasks.get(POINT_MASS_ID), horizon=5, lr=3e-3)
    starts = buffer.batch(np.arange(len(buffer)), "cpu").obs[:200]
    weights = [p.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)  # the model's own training left gradients behind
    policy.obs_norm.fit(starts)
    before = trainer.imagined_returns(starts).mean().item()
    trainer.fit(buffer, np.random.default_rng(1), updates=150, batch_size=64)
    after = trainer.imagined_returns(starts).mean().item()
    assert after > before + 1.0, (before, after)
    for weight, same in zip(model.parameters(), weights, strict=True):
        assert weight.grad is None and torch.equal(weight, same)
    plan = propose(model, policy, starts[0], horizon=4)
    assert plan.shape == (4, 2) and plan.abs().max() <= 1.0


def misleading_value(obs: torch.Tensor) -> torch.Tensor:
    """A critic that is badly wrong: it pays for being far from the point mass's goal."""
    return 100.0 * obs.norm(dim=-1)


@pytest.mark.parametrize("value", [None, misleading_value], ids=["honest", "misleading-value"])
def test_the_start_state_check_undoes_only_a_refit_that_does_worse_in_the_model(value):
    model, buffer = point_mass_model_and_data()
    torch.manual_seed(0)
    policy = PolicyPrior(2, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden_size=32)
    task = tasks.get(POINT_MASS_ID)
    trainer = PolicyTrainer(policy, model, task, horizon=3, lr=3e-3, check_horizon=20)
    trainer.fit(buffer, np.random.default_rng(1), updates=100, batch_size=64)  # a fair start
    starts = buffer.batch(buffer.episode_starts(), "cpu").obs
    trainer.terminal_value = value
    before = [p.clone() for p in policy.parameters()]
    check_before = trainer.start_state_return(starts)
    fit = trainer.fit(buffer, np.random.default_rng(2), updates=150, batch_size=64)
    assert fit.check_return == pytest.approx(trainer.start_state_return(starts))  # the kept one's
    if value is None:  # the honest objective agrees with the check: the refit stays
        assert not fit.kept_previous
        assert trainer.start_state_return(starts) > check_before
    else:  # chasing the wrong value drives the mass away from the goal: undone, exactly
        assert fit.kept_previous and fit.check_return == pytest.approx(check_before)
        for weight, old in zip(policy.parameters(), before, strict=True):
            assert torch.equal(weight, old)


def test_checking_against_the_best_restores_it_after_a_drift():
    model, buffer = point_mass_model_and_data()
    torch.manual_seed(0)
    low, high = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    policy = PolicyPrior(2, low, high, hidden_size=32)
    task = tasks.get(POINT_MASS_ID)
    trainer = PolicyTrainer(
        policy, model, task, horizon=3, lr=3e-3, check_horizon=20, check_against_best=True
    )
    trainer.fit(buffer, np.random.default_rng(1), updates=100, batch_size=64)  # a fair start
    starts = buffer.batch(buffer.episode_starts(), "cpu").obs
    best = {k: v.clone() for k, v in policy.state_dict().items()}
    best_return = trainer.start_state_return(starts)
    assert trainer.best is not None and all(torch.equal(trainer.best[k], best[k]) for k in best)
    # earlier refits drifted: the previous prior is a fresh one, worse than the best in the model
    drifted = PolicyPrior(2, low, high, hidden_size=32).state_dict()
    policy.load_state_dict(drifted)
    assert trainer.start_state_return(starts) < best_return
    trainer.terminal_value = misleading_value  # and this refit chases a wrong value
    fit = trainer.fit(buffer, np.random.default_rng(2), updates=150, batch_size=64)
    assert fit.kept_previous and fit.check_return == pytest.approx(best_return)
    for key, weight in policy.state_dict().items():  # the best, not the drifted previous one
        assert torch.equal(weight, best[key])
    # the other way round: the previous prior beats a worse best, so it is kept and is the best
    trainer.best = drifted
    fit = trainer.fit(buffer, np.random.default_rng(3), updates=150, batch_size=64)
    assert fit.kept_previous and fit.check_return == pytest.approx(best_return)
    assert all(torch.equal(trainer.best[k], best[k]) for k in best)
    resumed = PolicyTrainer(
        PolicyPrior(2, low, high, hidden_size=32), model, task, horizon=3, check_horizon=20
    )
    resumed.load_state_dict(trainer.state_dict())
    assert all(torch.equal(resumed.best[k], best[k]) for k in best)


def test_the_loop_trains_a_prior_that_acts_alone_and_evaluate_no_plan(tmp_path, capsys):
    config = toy_config(total_steps=500)
    config.policy.enabled = True
    config.policy.check_horizon = 20
    run = tmp_path / "run"
    rows = loop.train(config, run).metrics
    assert np.isfinite(rows[-1]["policy_return"])
    assert {row["policy_kept_previous"] for row in rows} <= {0.0, 1.0}
    assert all(np.isfinite(row["policy_check_return"]) for row in rows)
    for row in rows:  # the prior's share of the iteration's training; no value here
        assert 0 < row["policy_fit_s"] < row["model_fit_s"] and np.isnan(row["value_fit_s"])
    assert rows[-1]["policy_eval_return"] > -15.0, rows[-1]  # random actions score about -35
    assert rows[-1]["eval_return_mean"] > -8.0
    agent, _ = load_mpc_agent(run, device="cpu")
    assert agent.policy is not None
    assert main(["evaluate", str(run), "--episodes", "2", "--no-plan"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out


def test_evaluate_no_plan_without_a_prior_says_how_to_get_one(tmp_path, capsys):
    run = tmp_path / "run"
    loop.train(toy_config(total_steps=300), run)
    assert main(["evaluate", str(run), "--no-plan"]) == 2
    assert "--policy.enabled" in capsys.readouterr().err


def test_the_prior_can_collect_the_data_instead_of_the_planner(tmp_path):
    config = toy_config(total_steps=500)
    config.policy.enabled = config.policy.collect = True
    run = tmp_path / "run"
    rows = loop.train(config, run).metrics
    assert all(row["plan_ms_per_step"] == 0.0 for row in rows)  # no plan while collecting
    for row in rows:  # no start-state check
        assert np.isnan(row["policy_kept_previous"]) and np.isnan(row["policy_check_return"])
    agent, _ = load_mpc_agent(run)
    prior = PolicyAgent(agent.policy)
    buffer = ReplayBuffer.from_journal(run / "transitions.bin", 2, 2)
    last = buffer.batch(np.arange(len(buffer) - 50, len(buffer)), "cpu")
    # the last iteration's actions are the prior's: it was not retrained after collecting them
    expected = np.stack([prior.act(obs) for obs in last.obs.numpy()])
    np.testing.assert_allclose(last.action.numpy(), expected, atol=1e-5)
    assert np.isfinite(rows[-1]["eval_return_mean"]) and np.isfinite(rows[-1]["policy_eval_return"])


@pytest.mark.parametrize(
    "field,value",
    [
        ("policy.updates", 0),
        ("policy.share", 1.5),
        ("policy.lr", 0.0),
        ("policy.collect", True),
        ("policy.check_horizon", -1),
        ("policy.check_tolerance", -0.1),
        ("policy.check_against_best", True),  # without a check_horizon
    ],
)
def test_bad_policy_settings_are_config_errors(field, value):
    from dynaplan.config import TrainConfig
    from dynaplan.errors import ConfigError

    with pytest.raises(ConfigError, match="policy"):
        TrainConfig().with_fields({field: value}).validate()
