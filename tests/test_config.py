import pytest
import torch

from dynaplan import loop
from dynaplan.agents.factory import _with_planning_changes, build_mpc_agent, build_policy_trainer
from dynaplan.config import TrainConfig, config_from_dict, load_preset
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.types import Precision, Propagation


def test_with_fields_sets_dotted_fields_on_a_copy():
    base = TrainConfig()
    changed = base.with_fields(
        {
            "horizon": 5,
            "search.lr": 0.1,
            "dynamics.hidden_size": 64,
            "search.propagation": "ts1",
            "search.precision": "bf16",
        }
    )
    assert (changed.horizon, changed.search.lr, changed.dynamics.hidden_size) == (5, 0.1, 64)
    assert changed.search.propagation is Propagation.TS1
    assert changed.search.precision is Precision.BF16
    assert (base.horizon, base.search.lr, base.dynamics.hidden_size) == (10, None, 200)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"horizn": 5}, "unknown config field 'horizn'"),
        ({"search.lrr": 0.1}, "unknown config field 'search.lrr'"),
        ({"dynamics": {}}, "unknown config field 'dynamics'"),
        ({"horizon": "5"}, "horizon must be of type int"),
        ({"horizon": 2.5}, "horizon must be of type int"),
        ({"horizon": True}, "horizon must be of type int"),
        ({"search.propagation": "ts2"}, "search.propagation must be of type"),
        ({"search.precision": "fp16"}, "search.precision must be of type"),
    ],
)
def test_with_fields_refuses_unknown_fields_and_wrong_types(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().with_fields(changes)


def test_an_int_is_a_float_and_none_fits_optional_fields():
    config = TrainConfig().with_fields({"dynamics.lr": 1, "search.lr": None})
    assert config.dynamics.lr == 1 and config.search.lr is None


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"search.disagreement_penalty": -1.0}, ">= 0"),
        ({"search.disagreement_penalty": 1.0}, "needs an ensemble"),
        ({"search.disagreement_penalty": 1.0, "model": "ensemble", "search.propagation": "ts1"},
         "needs an ensemble"),
    ],
)  # fmt: skip
def test_bad_disagreement_penalties_are_config_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().with_fields(changes).validate()
    TrainConfig().with_fields({"search.disagreement_penalty": 1.0, "model": "ensemble"}).validate()


def test_a_safety_margin_shrinks_what_the_planner_aims_for_not_what_is_learned(tmp_path):
    with pytest.raises(ConfigError, match="safety_margin must be >= 0"):
        TrainConfig().with_fields({"search.safety_margin": -0.1}).validate()
    config = TrainConfig(env="Hopper-v5").with_fields({"search.safety_margin": 0.03}).validate()
    agent = build_mpc_agent(config, make_env(config.env), torch.device("cpu"))
    assert agent.objective.task.safety_margin == 0.03
    assert agent.task.safety_margin == 0  # the value and the prior learn the exact task
    pendulum = TrainConfig().with_fields({"search.safety_margin": 0.03}).validate()
    with pytest.raises(ConfigError, match="no healthy ranges"):
        loop.train(pendulum, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_an_upright_bound_is_for_the_planner_of_a_free_torso_only(tmp_path):
    fields = {"search.min_upright": 0.0, "search.safety_margin": 0.1}
    config = TrainConfig(env="Ant-v5").with_fields(fields).validate()
    agent = build_mpc_agent(config, make_env(config.env), torch.device("cpu"))
    assert agent.objective.task.min_upright == 0.0 and agent.objective.task.safety_margin == 0.1
    assert agent.task.min_upright is None  # the value and the prior learn the exact task
    with pytest.raises(ConfigError, match=r"search\.min_upright is a cosine .* \(-1, 1\)"):
        config.with_fields({"search.min_upright": 1.0}).validate()
    hopper = TrainConfig(env="Hopper-v5").with_fields({"search.min_upright": 0.0}).validate()
    with pytest.raises(ConfigError, match="no free torso"):
        loop.train(hopper, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_the_prior_can_learn_the_margin_shrunk_task_the_planner_aims_for(tmp_path):
    with pytest.raises(ConfigError, match=r"policy\.safety_margin must be >= 0"):
        TrainConfig().with_fields({"policy.safety_margin": -0.1}).validate()
    fields = {"policy.enabled": True, "search.safety_margin": 0.03}
    config = TrainConfig(env="Hopper-v5").with_fields(fields).validate()
    agent = build_mpc_agent(config, make_env(config.env), torch.device("cpu"))
    assert build_policy_trainer(config, agent).task.safety_margin == 0  # by default, exact
    config = config.with_fields({"policy.safety_margin": 0.05}).validate()
    assert build_policy_trainer(config, agent).task.safety_margin == 0.05
    assert agent.task.safety_margin == 0  # the value still learns the exact task
    plain = TrainConfig(env="Hopper-v5").validate()
    plain_agent = build_mpc_agent(plain, make_env(plain.env), torch.device("cpu"))
    assert build_policy_trainer(plain, plain_agent) is None
    pendulum = TrainConfig().with_fields({"policy.safety_margin": 0.03}).validate()
    with pytest.raises(ConfigError, match="no healthy ranges"):
        loop.train(pendulum, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_termination_gradient_is_for_planning_and_the_prior_on_request(tmp_path):
    with pytest.raises(ConfigError, match=r"needs a terminal value \(add --value\.enabled\)"):
        TrainConfig(env="Ant-v5").with_fields({"search.termination_gradient": True}).validate()
    fields = {"policy.enabled": True, "value.enabled": True, "search.termination_gradient": True}
    config = TrainConfig(env="Ant-v5").with_fields(fields).validate()
    agent = build_mpc_agent(config, make_env(config.env), torch.device("cpu"))
    assert agent.objective.task.termination_gradient
    assert not agent.task.termination_gradient  # the value learns from exact targets
    assert not build_policy_trainer(config, agent).task.termination_gradient
    config = config.with_fields({"policy.termination_gradient": True}).validate()
    assert build_policy_trainer(config, agent).task.termination_gradient
    with pytest.raises(ConfigError, match=r"trains the policy prior: add --policy\.enabled"):
        config.with_fields({"policy.enabled": False}).validate()
    without_value = _with_planning_changes(config, {"value.enabled": False}, tmp_path)
    assert not without_value.search.termination_gradient  # its weight was the value
    for field in ("search.termination_gradient", "policy.termination_gradient"):
        on = {field: True, "policy.enabled": True, "value.enabled": True}
        pendulum = TrainConfig().with_fields(on).validate()
        with pytest.raises(ConfigError, match="termination_gradient must be off"):
            loop.train(pendulum, tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_the_prior_can_learn_a_turn_over_as_a_fall(tmp_path):
    with pytest.raises(ConfigError, match=r"policy\.min_upright is a cosine"):
        TrainConfig().with_fields({"policy.min_upright": -1.0}).validate()
    fields = {"policy.enabled": True, "search.min_upright": 0.0}
    config = TrainConfig(env="Ant-v5").with_fields(fields).validate()
    agent = build_mpc_agent(config, make_env(config.env), torch.device("cpu"))
    assert build_policy_trainer(config, agent).task.min_upright is None  # by default, exact
    fields = {"policy.min_upright": 0.2, "policy.safety_margin": 0.1}
    trainer = build_policy_trainer(config.with_fields(fields).validate(), agent)
    assert trainer.task.min_upright == 0.2 and trainer.task.safety_margin == 0.1
    assert agent.task.min_upright is None  # the value still learns the exact task
    for field in ("policy.min_upright", "reset_below_upright"):
        hopper = TrainConfig(env="Hopper-v5").with_fields({field: 0.0}).validate()
        with pytest.raises(ConfigError, match="no free torso"):
            loop.train(hopper, tmp_path / "run")
        assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"reset_below_upright is a cosine"):
        TrainConfig().with_fields({"reset_below_upright": 1.0}).validate()


def test_a_preset_can_start_from_another_and_change_some_fields():
    hopper, long = load_preset("hopper"), load_preset("hopper-value-prior")
    assert long.value.enabled and long.policy.enabled and long.total_steps == 100_000
    assert long.policy.check_horizon == hopper.policy.check_horizon == 100  # kept
    assert long.policy.horizon == 30 and long.horizon == hopper.horizon == 10
    assert long.dynamics == hopper.dynamics and long.search.lr == hopper.search.lr  # kept
    assert long.search.iterations == 1 and long.search.safety_margin == 0.03  # changed
    assert long.value.gamma == long.policy.gamma == 0.997 != hopper.value.gamma  # changed
    full_obs = load_preset("ant105-value-prior")
    assert full_obs.env_kwargs == {"include_cfrc_ext_in_observation": True}
    assert load_preset("ant-value-prior").env_kwargs == {"include_cfrc_ext_in_observation": False}
    assert full_obs.total_steps == 200_000 and full_obs.value.enabled
    env = make_env(full_obs.env, **full_obs.env_kwargs)
    assert env.observation_space.shape == (105,)  # v5's default; the ant preset has 27
    env.close()


def test_a_config_mapping_names_its_preset_and_bad_names_are_errors():
    assert config_from_dict({"preset": "hopper", "search": {"lr": 0.1}}).search.lr == 0.1
    assert config_from_dict({"horizon": 4}) == TrainConfig(horizon=4)
    with pytest.raises(ConfigError, match="unknown preset 'hoper'"):
        config_from_dict({"preset": "hoper"})
    with pytest.raises(ConfigError, match="horizonn"):
        config_from_dict({"preset": "hopper", "horizonn": 4})


@pytest.mark.parametrize("kind", ["mbpo", "baseline"])
def test_another_commands_run_config_names_that_command(kind):
    """train --resume, clone or model-error on an mbpo or baseline folder say what it is."""
    with pytest.raises(ConfigError, match=f"`dynaplan {kind}` run.*`dynaplan {kind} --resume`"):
        TrainConfig.from_dict({"kind": kind, "env": "Hopper-v5"})
