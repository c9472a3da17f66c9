import json

import pytest
import torch

from dynaplan import loop
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.analysis.ablation import (
    DEFAULT_SETTINGS,
    PRIOR_ALONE,
    ablate,
    applicable_settings,
    select_settings,
    swap_parts,
    write_ablation,
)
from dynaplan.cli import main
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.evaluation import evaluate
from dynaplan.policy import PolicyAgent
from tests.conftest import toy_config
from tests.test_cli import one_line_error


@pytest.fixture(scope="module")
def value_policy_run(tmp_path_factory):
    """A short point-mass run with a terminal value (critics) and a policy prior."""
    config = toy_config(total_steps=300)
    config.value.enabled = config.policy.enabled = True
    config.value.updates = config.policy.updates = 20
    run = tmp_path_factory.mktemp("ablation") / "run"
    loop.train(config, run)
    return run


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ablation") / "plain"
    loop.train(toy_config(total_steps=300), run)
    return run


def test_planning_changes_keep_the_learned_parts(value_policy_run):
    trained, _ = load_mpc_agent(value_policy_run, "cpu")
    changes = {"horizon": 2, "value.enabled": False, "search.iterations": 1}
    changed, config = load_mpc_agent(value_policy_run, "cpu", changes)
    assert config.horizon == changed.planner.horizon == 2 and config.search.iterations == 1
    assert changed.terminal_value is None and changed.policy is not None
    for part in ("model", "policy"):
        for new, old in zip(
            getattr(changed, part).parameters(), getattr(trained, part).parameters(), strict=True
        ):
            assert torch.equal(new, old)


def test_learned_parts_cannot_be_changed_or_switched_on(value_policy_run, plain_run):
    with pytest.raises(ConfigError, match=r"dynamics\.hidden_size cannot be changed"):
        load_mpc_agent(value_policy_run, "cpu", {"dynamics.hidden_size": 8})
    with pytest.raises(ConfigError, match="trained without a value"):
        load_mpc_agent(plain_run, "cpu", {"value.enabled": True})
    with pytest.raises(ConfigError, match="horizon must be positive"):
        load_mpc_agent(plain_run, "cpu", {"horizon": 0})
    with pytest.raises(ConfigError, match="no healthy ranges"):
        load_mpc_agent(plain_run, "cpu", {"search.safety_margin": 0.03})


TOY_SETTINGS = [label for label in DEFAULT_SETTINGS if "safety margin" not in label]
"""The point mass has no healthy ranges to pull in."""


def test_every_setting_plays_the_same_episodes(value_policy_run, tmp_path):
    scores = ablate(value_policy_run, episodes=2, seed=7)
    assert [s.setting for s in scores] == TOY_SETTINGS
    by_setting = {s.setting: s for s in scores}
    env = make_env(toy_config().env)
    agent, _ = load_mpc_agent(value_policy_run, "cpu", {"search.compile": False})
    assert by_setting["as trained"].returns == evaluate(agent, env, 2, 7).returns
    prior = evaluate(PolicyAgent(agent.policy), env, 2, 7).returns
    assert by_setting[PRIOR_ALONE].returns == prior
    assert by_setting["as trained"].ms_per_step > 0

    files = write_ablation(scores, value_policy_run, 2, tmp_path / "out", "toy")
    assert [f.name for f in files] == ["ablation_toy.json", "ablation_toy.png"]
    written = json.loads(files[0].read_text())
    assert written["env_steps"] == 300 and written["episodes"] == 2
    assert [r["setting"] for r in written["results"]] == TOY_SETTINGS


def test_swapping_every_part_back_plays_the_earlier_controller(tmp_path):
    config = toy_config(total_steps=400, snapshots=True)  # snapshots at 300 and 400
    config.value.enabled = config.policy.enabled = True
    config.value.updates = config.policy.updates = 20
    run = loop.train(config, tmp_path / "run").run_dir
    scores = {s.setting: s for s in swap_parts(run, episodes=2, seed=7, donor_steps=300)}
    assert list(scores) == [
        "as trained",
        *(f"{part} from 300" for part in ("model", "value", "prior")),
        *(f"{pair} from 300" for pair in ("model + value", "model + prior", "value + prior")),
        "model + value + prior from 300",
        PRIOR_ALONE,
        "prior alone from 300",
    ]
    assert scores["model + prior from 300"].changes == {"model": 300, "prior": 300}
    env, eager = make_env(config.env), {"search.compile": False}

    def returns(at_steps: int | None, alone: bool = False) -> list[float]:
        agent, _ = load_mpc_agent(run, "cpu", eager, at_steps)
        return evaluate(PolicyAgent(agent.policy) if alone else agent, env, 2, 7).returns

    assert scores["as trained"].returns == returns(None)
    assert scores["model + value + prior from 300"].returns == returns(300)
    assert scores["prior alone from 300"].returns == returns(300, alone=True)
    assert scores[PRIOR_ALONE].returns == returns(None, alone=True)
    written = write_ablation(list(scores.values()), run, 2, tmp_path, "swap", swapped_from=300)
    assert json.loads(written[0].read_text())["changed"] == "learned parts taken from 300 env steps"


def test_settings_that_need_a_missing_part_are_left_out(plain_run, tmp_path):
    assert list(applicable_settings(plain_run)) == ["as trained", "1 Adam step", "H 5"]
    hopper = tmp_path / "hopper"
    hopper.mkdir()
    TrainConfig(env="Hopper-v5").save(hopper / "config.json")
    (hopper / "checkpoint.pt").touch()  # applicable_settings reads only the config
    hopper_settings = applicable_settings(hopper)
    assert {"safety margin 0.03", "1 Adam step, safety margin 0.03"} <= set(hopper_settings)
    with pytest.raises(CheckpointError, match="no run folder"):
        ablate(tmp_path / "nothing", episodes=1, seed=0)


def test_evaluate_plans_with_changes_from_the_command_line(plain_run, capsys):
    assert main(["evaluate", str(plain_run), "--episodes", "1", "--change", "horizon=2"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out
    assert main(["evaluate", str(plain_run), "--change", "horizon"]) == 2
    assert "FIELD=VALUE" in one_line_error(capsys)
    assert main(["evaluate", str(plain_run), "--change", "model=pets"]) == 2
    assert "cannot be changed" in one_line_error(capsys)


def test_settings_are_selected_by_label():
    assert list(select_settings(["H 5", "as trained"])) == ["H 5", "as trained"]
    assert select_settings([]) == DEFAULT_SETTINGS
    with pytest.raises(ConfigError, match=r"unknown ablation setting.*'H 5'"):
        select_settings(["H 4"])


def test_a_label_with_assignments_is_its_own_setting(plain_run):
    settings = select_settings(["as trained", "search.safety_margin=0.15", "horizon=5, H=x"])
    assert settings == {
        "as trained": {},
        "search.safety_margin=0.15": {"search.safety_margin": 0.15},
        "horizon=5, H=x": {"horizon": 5, "H": "x"},
    }
    with pytest.raises(ConfigError, match="FIELD=VALUE"):
        select_settings(["horizon=5, oops"])

    (score,) = ablate(plain_run, episodes=1, seed=3, settings=select_settings(["horizon=2"]))
    agent, config = load_mpc_agent(plain_run, "cpu", {"search.compile": False, "horizon": 2})
    assert score.changes == {"horizon": 2} and agent.planner.horizon == 2
    assert score.returns == evaluate(agent, make_env(config.env), 1, 3).returns
