import json

import pytest

from dynaplan import experiments
from dynaplan.agents.baselines import BaselineConfig
from dynaplan.analysis.planners import MATCHED
from dynaplan.cli import main
from dynaplan.config import TrainConfig
from dynaplan.envs import POINT_MASS_ID
from dynaplan.errors import ConfigError
from dynaplan.execution import Execution, run_one
from tests.conftest import toy_config


@pytest.fixture
def toy_experiment(monkeypatch):
    def variants(budget, out):
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
    labels = {s.label: len(s.runs) for s in result.comparison.summaries}
    assert labels == {"mbrl grad mlp H3 5 Adam steps": 2, "zero": 2}
    for name in ("curves.png", "summary.csv", "summary.md"):
        assert (tmp_path / "compare" / name).is_file()
    mbrl = next(s for s in result.comparison.summaries if s.label.startswith("mbrl"))
    assert mbrl.threshold.reached == 2  # the toy env is solved (return > -10)


def test_a_second_call_skips_finished_runs(toy_experiment, tmp_path):
    one_job = Execution(jobs=1)
    experiments.run_experiment(toy_experiment, seeds=1, out=tmp_path, execution=one_job)
    metrics = tmp_path / "runs" / "mbrl" / "seed_0" / "metrics.csv"
    before = metrics.stat().st_mtime_ns
    experiments.run_experiment(toy_experiment, seeds=1, out=tmp_path, execution=one_job)
    assert metrics.stat().st_mtime_ns == before


def test_chosen_variants_run_alone_and_compare_with_the_rest(toy_experiment, tmp_path):
    one_job = Execution(jobs=1)
    result = experiments.run_experiment(
        toy_experiment, seeds=1, out=tmp_path, execution=one_job, variants=["zero"]
    )
    assert [s.label for s in result.comparison.summaries] == ["zero"]
    result = experiments.run_experiment(
        toy_experiment, seeds=1, out=tmp_path, execution=one_job, variants=["mbrl"]
    )
    mpc = "mbrl grad mlp H3 5 Adam steps"
    assert {s.label for s in result.comparison.summaries} == {mpc, "zero"}
    with pytest.raises(ConfigError, match=r"no variant\(s\) \['walk'\]; choose from"):
        experiments.run_experiment(toy_experiment, seeds=1, out=tmp_path, variants=["walk"])


def test_every_experiment_builds_valid_configs(tmp_path):
    for name, experiment in experiments.EXPERIMENTS.items():
        for budget in experiments.BUDGETS.values():
            for config in experiment.variants(budget, tmp_path).values():
                config.validate()
        small = experiment.variants(experiments.BUDGETS["small"], tmp_path)
        assert small or experiment.analysis, name
        if experiment.expert is not None:
            experiments.load_preset(experiment.expert).validate()


def test_long_locomotion_runs_compile_their_rollout_and_small_budgets_stay_eager(tmp_path):
    for name in ("hopper", "beyond", "beyond-ant"):
        for budget, compiled in (("full", True), ("small", False)):
            variants = experiments.EXPERIMENTS[name].variants(experiments.BUDGETS[budget], tmp_path)
            mbrl = [c for c in variants.values() if isinstance(c, TrainConfig)]
            assert mbrl and all(c.search.compile == compiled for c in mbrl), (name, budget)


def test_the_pendulum_experiment_keeps_the_papers_mpc_beside_the_preset(tmp_path):
    variants = experiments.EXPERIMENTS["pendulum"].variants(experiments.BUDGETS["full"], tmp_path)
    for variant, horizon in (("mbrl-H1", 1), ("mbrl-H10", 10)):
        paper = variants[variant]
        assert (paper.horizon, paper.search.iterations, paper.search.replan_every) == (
            horizon,
            10,
            1,
        )
        assert not paper.value.enabled
    assert variants["mbrl-lqr"].to_dict() == {
        **experiments.load_preset("pendulum").to_dict(),
        "stop_at_return": 1000.0,
    }


def test_bad_names_are_config_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown experiment"):
        experiments.run_experiment("walker", 1, tmp_path)
    with pytest.raises(ConfigError, match="unknown budget"):
        experiments.run_experiment("pendulum", 1, tmp_path, budget="huge")
    assert main(["experiment", "walker", "--out", str(tmp_path)]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_pendulum_small_budget_end_to_end(tmp_path):
    result = experiments.run_experiment("pendulum", seeds=1, out=tmp_path, budget="small")
    labels = {s.label for s in result.comparison.summaries}
    assert labels == {
        "mbrl grad mlp H1 2 Adam steps",
        "mbrl grad mlp H10 2 Adam steps",
        "mbrl grad mlp H3 2 Adam steps + lqr value",
        "ppo",
    }


def test_analysis_experiments_share_one_trained_expert(tmp_path):
    result = experiments.run_experiment("planners", 1, tmp_path, budget="small")
    assert result.comparison is None
    scores = json.loads((tmp_path / "planners" / "planner_comparison.json").read_text())
    assert [r["planner"] for r in scores["results"]] == list(MATCHED)
    checkpoint = (tmp_path / "expert" / "checkpoint.pt").stat().st_mtime_ns
    result = experiments.run_experiment("model-error", 1, tmp_path, budget="small")
    assert (tmp_path / "expert" / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # reused
    assert {p.name for p in result.files} >= {"model_error.json", "error_vs_time.png"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "ant", "beyond-ant"])
def test_small_budgets_end_to_end(name, tmp_path):
    result = experiments.run_experiment(name, seeds=1, out=tmp_path, budget="small")
    assert len(result.comparison.summaries) == len(
        experiments.EXPERIMENTS[name].variants(experiments.BUDGETS["small"], tmp_path)
    )


def test_warmstart_small_budget_clones_the_expert_and_starts_ppo_from_it(tmp_path):
    result = experiments.run_experiment("warmstart", 1, tmp_path, budget="small")
    labels = {s.label for s in result.comparison.summaries}
    assert labels == {"ppo", "ppo from bc", "ppo from dagger"}
    for method in ("bc", "dagger"):
        report = json.loads((tmp_path / "clones" / method / "clone.json").read_text())
        first = (tmp_path / "runs" / f"ppo-{method}" / "seed_0" / "metrics.csv").read_text()
        assert first.splitlines()[1].split(",")[1] == "0"  # the clone itself is evaluated first
        assert "return_mean" in report["expert"]


def test_a_run_that_stopped_at_its_target_return_counts_as_finished(tmp_path):
    config = toy_config(total_steps=400, stop_at_return=-1000.0)  # reached at the first eval
    run_dir = str(tmp_path / "run")
    run_one(config, run_dir)
    metrics = tmp_path / "run" / "metrics.csv"
    rows, before = metrics.read_text().splitlines(), metrics.stat().st_mtime_ns
    assert len(rows) == 2  # header and the one iteration before stopping
    run_one(config, run_dir)
    assert metrics.stat().st_mtime_ns == before


def test_beyond_small_budget_runs_mpc_value_policy_mbpo_and_sac_side_by_side(tmp_path):
    result = experiments.run_experiment("beyond", seeds=1, out=tmp_path, budget="small")
    labels = {s.label for s in result.comparison.summaries}
    mpc = "mbrl grad mlp H10 2 Adam steps"  # the small budget plans with 2
    prior = f"{mpc} + value + policy"  # with the hopper preset's start-state check
    preset = (
        "mbrl grad mlp H10 1 Adam step margin 0.03 + value (gamma 0.997) "
        "+ policy (H30, gamma 0.997, checked 100)"
    )
    assert labels == {
        mpc,
        f"{mpc} + value",
        f"{prior} (checked 100)",
        f"{prior} (checked 100): prior alone",
        f"{prior} (collects, checked 100)",
        f"{prior} (collects, checked 100): prior alone",
        preset,  # hopper-value-prior: 1 Adam step (kept by the small budget), margin, discounts
        f"{preset}: prior alone",
        "mbpo",
        "sac",
    }
    full = experiments.EXPERIMENTS["beyond"].variants(experiments.BUDGETS["full"], tmp_path)
    assert {config.total_steps for config in full.values()} == {100_000}  # the same budget
    assert {config.eval_episodes for config in full.values()} == {5}
    every = {  # one evaluation grid: an MBRL run counts iterations, the others env steps
        config.eval_every * getattr(config, "steps_per_iteration", 1) for config in full.values()
    }
    assert every == {experiments.BEYOND_EVAL_EVERY}


def test_a_full_beyond_comparison_reports_budgets_and_the_last_stretch(monkeypatch, tmp_path):
    asked = {}
    monkeypatch.setattr(experiments, "run_all", lambda tasks, execution: None)
    monkeypatch.setattr(experiments, "compare", lambda patterns, out, **kw: asked.update(kw))
    experiments.run_experiment("beyond-ant", seeds=1, out=tmp_path, budget="full")
    assert asked["budgets"] == (50_000, 100_000, 150_000, 200_000)
    assert asked["window"] == (150_000, 200_000)
    experiments.run_experiment("beyond", seeds=1, out=tmp_path, budget="small")
    assert (asked["budgets"], asked["window"]) == ((), None)  # 400-step runs


def test_beyond_ant_compares_the_same_variants_on_ant_at_200k(tmp_path):
    hopper = experiments.EXPERIMENTS["beyond"].variants(experiments.BUDGETS["full"], tmp_path)
    ant = experiments.EXPERIMENTS["beyond-ant"].variants(experiments.BUDGETS["full"], tmp_path)
    assert ant.keys() == hopper.keys()
    assert {config.total_steps for config in ant.values()} == {200_000}
    assert {config.env for config in ant.values()} == {"Ant-v5"}
    assert all(config.env_kwargs == experiments.ANT_OBS27 for config in ant.values())
    assert ant["sac"].env_kwargs is not ant["mbpo"].env_kwargs  # no dict shared by two runs
    assert ant["mbpo"].rollout_max_length == 25
