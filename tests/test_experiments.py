import pytest

from dynaplan import experiments
from dynaplan.agents.baselines import BaselineConfig
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID
from dynaplan.errors import ConfigError
from dynaplan.execution import Execution
from tests.conftest import toy_config


@pytest.fixture
def toy_experiment(monkeypatch):
    def variants(budget):
        return {
            "mbrl": toy_config(total_steps=300),
            "zero": BaselineConfig(
                env=POINT_MASS_ID, algo="zero", total_steps=300, eval_every=100, eval_episodes=1
            ),
        }

    monkeypatch.setitem(experiments.EXPERIMENTS, "toy", experiments.Experiment(variants, -10.0))
    return "toy"


def test_runs_every_variant_and_seed_then_compares(toy_experiment, tmp_path):
    result = experiments.run_experiment(toy_experiment, seeds=2, out=tmp_path)
    labels = {s.label: len(s.runs) for s in result.summaries}
    assert labels == {"mbrl grad mlp H3": 2, "zero": 2}
    for name in ("curves.png", "summary.csv", "summary.md"):
        assert (tmp_path / "compare" / name).is_file()
    mbrl = next(s for s in result.summaries if s.label.startswith("mbrl"))
    assert mbrl.threshold.reached == 2  # the toy env is solved (return > -10)


def test_a_second_call_skips_finished_runs(toy_experiment, tmp_path):
    one_job = Execution(jobs=1)
    experiments.run_experiment(toy_experiment, seeds=1, out=tmp_path, execution=one_job)
    metrics = tmp_path / "runs" / "mbrl" / "seed_0" / "metrics.csv"
    before = metrics.stat().st_mtime_ns
    experiments.run_experiment(toy_experiment, seeds=1, out=tmp_path, execution=one_job)
    assert metrics.stat().st_mtime_ns == before


def test_every_experiment_builds_valid_configs():
    for name, experiment in experiments.EXPERIMENTS.items():
        for budget in experiments.BUDGETS.values():
            for config in experiment.variants(budget).values():
                config.validate()
        assert experiment.variants(experiments.BUDGETS["small"]), name


def test_bad_names_are_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown experiment"):
        experiments.run_experiment("walker", 1, tmp_path)
    with pytest.raises(ConfigError, match="unknown budget"):
        experiments.run_experiment("pendulum", 1, tmp_path, budget="huge")
    assert main(["experiment", "walker", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_pendulum_small_budget_end_to_end(tmp_path):
    result = experiments.run_experiment("pendulum", seeds=1, out=tmp_path, budget="small")
    assert {s.label for s in result.summaries} == {"mbrl grad mlp H1", "mbrl grad mlp H10", "ppo"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "ant"])
def test_small_budgets_end_to_end(name, tmp_path):
    result = experiments.run_experiment(name, seeds=1, out=tmp_path, budget="small")
    assert len(result.summaries) == len(
        experiments.EXPERIMENTS[name].variants(experiments.BUDGETS["small"])
    )
