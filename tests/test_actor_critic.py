import math

import numpy as np
import pytest
import torch

from dynaplan import loop, tasks
from dynaplan.actor_critic import ActorCriticTrainer, GaussianActor, QEnsemble, SoftValue
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.cli import main
from dynaplan.config import PolicyConfig
from dynaplan.envs import POINT_MASS_ID, PointMassEnv
from dynaplan.errors import ConfigError
from dynaplan.models import DynamicsModel
from dynaplan.types import PolicyKind, Propagation
from tests.conftest import toy_config
from tests.test_policy import point_mass_model_and_data

LOW, HIGH = np.array([-1.0, -0.5]), np.array([1.0, 0.5])


def test_samples_stay_inside_the_bounds_and_their_log_density_is_the_squashed_gaussians():
    torch.manual_seed(0)
    actor = GaussianActor(2, LOW, HIGH, hidden_size=16)
    obs = 3 * torch.randn(4000, 2)
    actions, log_prob = actor.sample(obs)
    low, high = torch.as_tensor(LOW).float(), torch.as_tensor(HIGH).float()
    assert actions.shape == (4000, 2) and log_prob.shape == (4000,)
    assert (actions >= low).all() and (actions <= high).all()
    # the density of y = tanh(u), u ~ N(mean, std), by the change of variables in float64
    mean, log_std = (t.double() for t in actor._gaussian(obs))
    squashed = ((actions - actor.mid) / actor.half_range).double().clamp(-1 + 1e-9, 1 - 1e-9)
    u = torch.atanh(squashed)
    normal = torch.distributions.Normal(mean, log_std.exp())
    expected = (normal.log_prob(u) - torch.log1p(-(squashed**2))).sum(-1)
    close = squashed.abs().amax(-1) < 0.999  # atanh loses digits at the bounds
    assert torch.allclose(log_prob.double()[close], expected[close], atol=1e-3)
    deterministic = actor.mid + actor.half_range * torch.tanh(mean[:3].float())
    assert torch.allclose(actor(obs[:3]), deterministic, atol=1e-6)


def test_critic_outputs_read_in_the_return_range_and_clip_into_it():
    critic = QEnsemble(2, 2, ensemble_size=3, hidden_size=8)
    with torch.no_grad():
        critic.head.weight.zero_()
        critic.head.bias.fill_(0.5)
        critic.q_low.fill_(10.0)
        critic.q_high.fill_(30.0)
    values = critic.members(torch.zeros(4, 2), torch.zeros(4, 2))
    assert values.shape == (3, 4) and torch.allclose(values, torch.full((3, 4), 25.0))
    assert torch.equal(
        critic.clipped(torch.tensor([0.0, 20.0, 99.0])), torch.tensor([10.0, 20.0, 30.0])
    )
    actor = GaussianActor(2, LOW, HIGH, hidden_size=8)
    assert SoftValue(critic, actor)(torch.zeros(5, 2)).shape == (5,)
    assert set(SoftValue(critic, actor).state_dict()) == {
        f"critic.{k}" for k in critic.state_dict()
    }


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 11])
def test_ts1_takes_rows_that_are_no_multiple_of_the_elites(rows):
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, ensemble_size=5, hidden_size=8)
    obs, action = torch.randn(rows, 3), torch.randn(rows, 2, requires_grad=True)
    next_obs = model.step(obs, action, Propagation.TS1)
    assert next_obs.shape == (rows, 3) and torch.isfinite(next_obs).all()
    # each row is one member's prediction for that row
    x = model.normalized_inputs(obs, action)
    every = obs + model.target_norm.denormalize(model(x.expand(5, rows, 5))[0])  # [E, N, S]
    matches = (every - next_obs[None]).abs().amax(-1) < 1e-5  # [E, N]
    assert (matches.sum(0) >= 1).all()
    next_obs.sum().backward()
    assert action.grad is not None and (action.grad.abs().sum(-1) > 0).all()


def make_trainer(**kwargs) -> tuple[ActorCriticTrainer, object]:
    model, buffer = point_mass_model_and_data()
    torch.manual_seed(0)
    actor = GaussianActor(2, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), hidden_size=32)
    critic = QEnsemble(2, 2, hidden_size=32)
    settings = dict(horizon=3, lr=1e-3, batch_size=64, critic_warmup=20, rollout_horizon=5)
    trainer = ActorCriticTrainer(
        actor, critic, model, tasks.get(POINT_MASS_ID), **{**settings, **kwargs}
    )
    return trainer, buffer


def test_training_raises_the_actors_model_return_and_moves_neither_model_nor_data():
    trainer, buffer = make_trainer(updates_per_step=0.5)
    starts = buffer.batch(np.arange(len(buffer)), "cpu").obs[:300]
    model_weights = [p.clone() for p in trainer.model.parameters()]
    trainer.model.zero_grad(set_to_none=True)

    def model_return() -> float:
        with torch.no_grad():
            rollout = trainer.imagine(starts, 10)
        return (rollout.rewards * rollout.alive[:-1]).sum(0).mean().item()

    before = model_return()
    fit = trainer.fit(buffer, np.random.default_rng(1))
    assert math.isfinite(fit.imagined_return) and not fit.kept_previous
    assert model_return() > before + 0.5, (before, model_return())
    for weight, same in zip(trainer.model.parameters(), model_weights, strict=True):
        assert weight.grad is None and torch.equal(weight, same)
    assert trainer.trained_on == len(buffer)
    # the critic's range came from the rewards (all negative here: r = -|p|)
    assert trainer.critic.q_low < trainer.critic.q_high <= 0
    # no start state lies past a predicted termination (outside the box)
    assert len(trainer.starts) <= trainer.capacity
    assert (trainer.starts.abs().amax(-1) <= PointMassEnv.bound).all()


def test_a_fit_runs_updates_per_step_times_the_new_transitions():
    trainer, buffer = make_trainer(updates_per_step=0.1, critic_warmup=3)
    calls = []
    update = trainer.update
    trainer.update = lambda train_actor=True: calls.append(train_actor) or update(train_actor)
    trainer.fit(buffer, np.random.default_rng(0))
    assert calls.count(False) == 3 and calls.count(True) == math.ceil(0.1 * len(buffer))
    calls.clear()
    trainer.fit(buffer, np.random.default_rng(0))  # nothing new: the critics warm up only
    assert calls == [False] * 3


def test_the_trainer_state_round_trips():
    trainer, buffer = make_trainer(updates_per_step=0.05)
    trainer.fit(buffer, np.random.default_rng(0))
    other, _ = make_trainer()
    other.load_state_dict(trainer.state_dict())
    assert other.trained_on == trainer.trained_on and other.bounds_set
    assert torch.equal(other.log_alpha, trainer.log_alpha)
    for a, b in zip(
        other.target.state_dict().values(), trainer.target.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


def actor_critic_config(**overrides):
    policy = PolicyConfig(
        enabled=True,
        kind=PolicyKind.ACTOR_CRITIC,
        collect=True,
        horizon=2,
        hidden_size=16,
        batch_size=32,
        gamma=0.95,
        updates_per_step=0.2,
        critic_warmup=5,
        rollout_horizon=3,
    )
    return toy_config(total_steps=400, policy=policy, **overrides)


def test_the_loop_trains_an_actor_critic_that_resumes_and_evaluates_with_and_without_planning(
    tmp_path, capsys
):
    run = tmp_path / "run"
    result = loop.train(actor_critic_config(), run)
    row = result.metrics[-1]
    assert row["env_steps"] == 400 and math.isfinite(row["eval_return_mean"])
    assert math.isfinite(row["policy_eval_return"]) and math.isfinite(row["policy_return"])
    assert row["policy_alpha"] > 0 and math.isfinite(row["policy_entropy"])
    agent, _ = load_mpc_agent(run, device="cpu")
    assert isinstance(agent.policy, GaussianActor) and isinstance(agent.terminal_value, SoftValue)
    assert agent.terminal_value.critic.q_low < agent.terminal_value.critic.q_high
    resumed = loop.resume(run, changes={"total_steps": 500})
    assert resumed.metrics[-1]["env_steps"] == 500
    assert all(math.isfinite(r["policy_alpha"]) for r in resumed.metrics)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--episodes", "1", "--no-plan"]) == 0
    assert main(["evaluate", str(run), "--episodes", "1"]) == 0


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("value.enabled", True, "drop --value.enabled"),
        ("policy.check_horizon", 50, "deterministic prior"),
        ("policy.updates_per_step", 0.0, "updates_per_step"),
        ("policy.rollout_horizon", 0, "rollout_horizon"),
        ("policy.gamma", 1.0, "gamma"),
    ],
)
def test_bad_actor_critic_settings_are_config_errors(field, value, message):
    with pytest.raises(ConfigError, match=message):
        actor_critic_config().with_fields({field: value}).validate()


def test_dhmbpo_critics_start_mid_range_drop_units_only_while_learning_and_pair_up():
    torch.manual_seed(0)
    critic = QEnsemble(2, 2, ensemble_size=5, hidden_size=16, layer_norm=True, dropout=0.5)
    with torch.no_grad():
        critic.q_low.fill_(-10.0)
        critic.q_high.fill_(30.0)
    obs, action = torch.randn(64, 2), torch.randn(64, 2)
    assert torch.allclose(critic.members(obs, action), torch.full((5, 64), 10.0))
    with torch.no_grad():
        critic.head.weight.normal_()
    plain = critic.members(obs, action)
    assert torch.equal(plain, critic.members(obs, action))  # no dropout outside learning
    assert not torch.equal(plain, critic.members(obs, action, dropout=True))
    values = torch.arange(5.0)[:, None].repeat(1, 3)  # member i says i
    pairs = torch.stack([critic.pessimistic(values) for _ in range(200)])
    assert set(pairs[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0} and len(set(pairs[:, 0].tolist())) > 1


def test_normalised_observations_and_larger_distribution_rollouts():
    model, buffer = point_mass_model_and_data()
    torch.manual_seed(0)
    actor = GaussianActor(2, -np.ones(2), np.ones(2), hidden_size=16, normalize_obs=True)
    critic = QEnsemble(2, 2, hidden_size=16, normalize_obs=True)
    trainer = ActorCriticTrainer(
        actor,
        critic,
        model,
        tasks.get(POINT_MASS_ID),
        horizon=2,
        batch_size=32,
        updates_per_step=0.01,
        critic_warmup=2,
        rollout_horizon=3,
        rollout_states=500,
    )
    trainer.fit(buffer, np.random.default_rng(0))
    data = buffer.batch(np.arange(len(buffer)), "cpu").obs
    for norm in (actor.obs_norm, critic.obs_norm, trainer.target.obs_norm):
        assert torch.allclose(norm.mean, data.mean(0)) and torch.allclose(
            norm.std, data.std(0, unbiased=False)
        )
    assert trainer.capacity == 10 * max(20 * 32, 500)
    trainer.starts = trainer.starts[:0]
    trainer.refill_starts(buffer, np.random.default_rng(1))
    assert len(trainer.starts) >= 500


def test_the_dhmbpo_settings_train_resume_and_load(tmp_path):
    config = actor_critic_config().with_fields(
        {
            "policy.critics": 5,
            "policy.num_layers": 3,
            "policy.critic_layer_norm": True,
            "policy.critic_dropout": 0.001,
            "policy.normalize_obs": True,
            "policy.rollout_states": 100,
        }
    )
    run = tmp_path / "run"
    loop.train(config.with_fields({"total_steps": 300}), run)
    agent, _ = load_mpc_agent(run, device="cpu")
    assert agent.policy.obs_norm is not None and agent.terminal_value.critic.ensemble_size == 5
    assert agent.policy.obs_norm.std.ne(1).all()  # fitted, and saved with the actor
    assert loop.resume(run, changes={"total_steps": 400}).metrics[-1]["env_steps"] == 400
