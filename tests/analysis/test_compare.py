import csv
import json
import math

import numpy as np
import pytest

from dynaplan import loop
from dynaplan.agents.baselines import BaselineConfig, run_baseline
from dynaplan.analysis.compare import (
    Run,
    bootstrap_ci,
    compare,
    group_runs,
    load_runs,
    mean_band,
    parse_reference,
    run_label,
    summarise,
)
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID
from dynaplan.errors import ConfigError
from dynaplan.rundir import RunDir
from tests.conftest import toy_config

PPO = {"kind": "baseline", "algo": "ppo", "preset": "default", "env": "Hopper-v5"}
MBRL = {"planner": "grad", "model": "mlp", "horizon": 10, "env": "Hopper-v5"}


def write_run(path, config: dict, seed: int, steps, returns) -> None:
    """A synthetic run folder: config.json and metrics.csv with known evaluations."""
    run = RunDir.create(path)
    run.config.write_text(json.dumps({**config, "seed": seed}))
    for k, (step, ret) in enumerate(zip(steps, returns, strict=True)):
        run.append_metrics(
            {"iteration": k + 1, "env_steps": step, "eval_return_mean": ret, "wall_s": 1.0}
        )


def synthetic(step_returns: list[tuple[list[int], list[float]]]) -> list[Run]:
    return [
        Run(path=f"r{k}", label="x", env="e", seed=k, steps=np.array(s), returns=np.array(r))
        for k, (s, r) in enumerate(step_returns)
    ]


def test_labels_from_configs():
    assert run_label(MBRL) == "mbrl grad mlp H10"
    assert run_label(PPO) == "ppo"
    assert run_label({**PPO, "preset": "zoo"}) == "ppo zoo"
    assert run_label({"kind": "baseline", "algo": "zero", "preset": "default"}) == "zero"
    assert run_label({**MBRL, "label": "horizon=5,search.lr=0.1"}) == "horizon=5,search.lr=0.1"
    assert run_label({**MBRL, "value": {"enabled": True}}) == "mbrl grad mlp H10 + value"
    lqr = {**MBRL, "value": {"enabled": True, "kind": "lqr"}, "policy": {"enabled": True}}
    assert run_label(lqr) == "mbrl grad mlp H10 + lqr value + policy"
    assert run_label({**PPO, "init": "runs/clones/dagger"}) == "ppo from dagger"
    collects = {**MBRL, "policy": {"enabled": True, "collect": True}}
    assert run_label(collects) == "mbrl grad mlp H10 + policy (collects)"
    checked = {**MBRL, "policy": {"enabled": True, "collect": True, "check_horizon": 100}}
    assert run_label(checked) == "mbrl grad mlp H10 + policy (collects, checked 100)"
    longer = {**MBRL, "policy": {"enabled": True, "horizon": 30, "check_horizon": 100}}
    assert run_label(longer) == "mbrl grad mlp H10 + policy (H30, checked 100)"
    best = {**MBRL, "policy": {"enabled": True, "check_horizon": 100, "check_against_best": True}}
    assert run_label(best) == "mbrl grad mlp H10 + policy (checked 100 against the best)"
    strict = {**MBRL, "policy": {"enabled": True, "check_horizon": 100, "check_tolerance": 0.0}}
    assert run_label(strict) == "mbrl grad mlp H10 + policy (checked 100 within 0)"
    same = {**MBRL, "policy": {"enabled": True, "horizon": 10}}
    assert run_label(same) == "mbrl grad mlp H10 + policy"
    safe = {**MBRL, "search": {"safety_margin": 0.03}, "policy": {**longer["policy"]}}
    assert run_label(safe) == "mbrl grad mlp H10 margin 0.03 + policy (H30, checked 100)"
    safe["policy"]["safety_margin"] = 0.05
    assert run_label(safe) == (
        "mbrl grad mlp H10 margin 0.03 + policy (H30, checked 100, margin 0.05)"
    )
    one_step = {**MBRL, "search": {"iterations": 1, "safety_margin": 0.03}}
    assert run_label(one_step) == "mbrl grad mlp H10 1 Adam step margin 0.03"
    cem = {**MBRL, "planner": "cem", "search": {"iterations": 5}}
    assert run_label(cem) == "mbrl cem mlp H10 5 iterations"
    further = {  # the check's horizon and the discounts tell runs apart
        **MBRL,
        "value": {"enabled": True, "gamma": 0.997},
        "policy": {"enabled": True, "gamma": 0.997, "check_horizon": 300},
    }
    assert run_label(further) == (
        "mbrl grad mlp H10 + value (gamma 0.997) + policy (gamma 0.997, checked 300)"
    )
    default_gamma = {**further, "value": {"enabled": True, "gamma": 0.99}}
    assert run_label(default_gamma).startswith("mbrl grad mlp H10 + value + policy")
    upright = {
        **MBRL,
        "search": {"safety_margin": 0.15, "min_upright": 0.0},
        "policy": {"enabled": True, "min_upright": 0.5},
        "reset_below_upright": 0.0,
    }
    assert run_label(upright) == (
        "mbrl grad mlp H10 margin 0.15 upright 0 + policy (upright 0.5); resets below upright 0"
    )
    felt = {
        **MBRL,
        "search": {"termination_gradient": True},
        "policy": {"enabled": True, "termination_gradient": True},
    }
    assert run_label(felt) == (
        "mbrl grad mlp H10 termination gradient + policy (termination gradient)"
    )


def test_a_policy_priors_own_evaluations_form_a_group_of_their_own(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.config.write_text(json.dumps({**MBRL, "policy": {"enabled": True}, "seed": 3}))
    for k, prior in enumerate([math.nan, 50.0, 70.0]):
        row = {"iteration": k + 1, "env_steps": 100 * (k + 1), "eval_return_mean": 10.0 * k}
        run.append_metrics({**row, "policy_eval_return": prior, "wall_s": 1.0})
    runs, _ = load_runs([str(tmp_path / "run")])
    groups = group_runs(runs)
    assert set(groups) == {"mbrl grad mlp H10 + policy", "mbrl grad mlp H10 + policy: prior alone"}
    prior = groups["mbrl grad mlp H10 + policy: prior alone"][0]
    np.testing.assert_array_equal(prior.steps, [200, 300])
    np.testing.assert_array_equal(prior.returns, [50.0, 70.0])
    assert prior.seed == 3


def test_a_branch_forms_a_group_apart_from_its_source(tmp_path):
    branches = {"control": {}, "changed": {"search.lr": 0.05, "policy.check_against_best": True}}
    write_run(tmp_path / "source", MBRL, seed=1, steps=[100, 200], returns=[1.0, 2.0])
    for name, changes in branches.items():
        write_run(tmp_path / name, MBRL, seed=1, steps=[100, 200], returns=[1.0, 2.0])
        branch = {"at_steps": 150_000, "changes": changes}
        (tmp_path / name / "branch.json").write_text(json.dumps(branch))
    write_run(tmp_path / "replicate", MBRL, seed=1, steps=[100, 200], returns=[1.0, 2.0])
    replicate = {"at_steps": 150_000, "changes": {}, "reseed": 7}
    (tmp_path / "replicate" / "branch.json").write_text(json.dumps(replicate))
    runs, _ = load_runs([str(tmp_path / "*")])
    groups = group_runs(runs)
    assert set(groups) == {
        "mbrl grad mlp H10",
        "mbrl grad mlp H10, branched at 150,000 (no change)",
        "mbrl grad mlp H10, branched at 150,000 (search.lr=0.05, policy.check_against_best=true)",
    }
    # a reseeded control is a replicate of the control, its reseed its seed
    assert [run.seed for run in groups["mbrl grad mlp H10, branched at 150,000 (no change)"]] == [
        1,
        7,
    ]


def test_band_is_on_the_common_grid_and_contains_the_mean():
    runs = synthetic(
        [
            ([100, 300, 500], [0.0, 20.0, 40.0]),
            ([200, 300, 400], [10.0, 30.0, 50.0]),
            ([100, 200, 300, 400, 500], [5.0, 5.0, 5.0, 5.0, 5.0]),
        ]
    )
    band = mean_band(runs)
    # where every seed has evaluations: from the latest first (200) to the earliest last (400)
    np.testing.assert_array_equal(band.steps, [200, 300, 400])
    # seed 0 interpolated: 10 at 200, 20 at 300, 30 at 400
    np.testing.assert_allclose(band.mean, [(10 + 10 + 5) / 3, (20 + 30 + 5) / 3, (30 + 50 + 5) / 3])
    assert np.all(band.low <= band.mean) and np.all(band.mean <= band.high)
    assert np.all(band.high - band.low > 0)
    same = mean_band(synthetic([([1, 2], [3.0, 4.0])] * 3))
    np.testing.assert_array_equal(same.low, same.high)  # no spread, no band


def test_bootstrap_is_fixed_and_sensible():
    values = np.random.default_rng(1).normal(size=(10, 4))
    low, high = bootstrap_ci(values)
    again = bootstrap_ci(values)
    np.testing.assert_array_equal(low, again[0])
    np.testing.assert_array_equal(high, again[1])
    mean, sem = values.mean(0), values.std(0, ddof=1) / math.sqrt(10)
    # a percentile bootstrap of the mean is close to mean ± 1.96 standard errors
    np.testing.assert_allclose(high - low, 2 * 1.96 * sem, rtol=0.25)
    assert np.all((low < mean) & (mean < high))
    with pytest.raises(ValueError):
        bootstrap_ci(np.zeros(3))


def test_a_stopped_run_counts_up_to_the_steps_it_collected_not_its_last_evaluation(tmp_path):
    run = RunDir.create(tmp_path / "run")
    run.config.write_text(json.dumps({**MBRL, "total_steps": 500}))
    for k, value in enumerate([1.0, math.nan]):  # --eval-every 2: evaluated at 100, killed at 200
        row = {"iteration": k + 1, "env_steps": 100 * (k + 1), "eval_return_mean": value}
        run.append_metrics({**row, "wall_s": 1.0})
    (stopped,), _ = load_runs([str(tmp_path / "run")])
    assert not stopped.finished and stopped.return_at(200) == 1.0
    assert math.isnan(stopped.return_at(201))


def test_budgets_take_the_last_evaluation_at_or_before_them():
    runs = synthetic([([100, 200, 300], [1.0, 2.0, 3.0]), ([150, 250, 350], [10.0, 20.0, 30.0])])
    assert math.isnan(runs[0].return_at(99))
    assert runs[0].return_at(100) == 1.0
    assert runs[0].return_at(250) == 2.0
    assert runs[0].return_at(10_000) == 3.0
    runs[0].finished = False  # stopped at 300 before its total_steps: nothing past its end
    assert runs[0].return_at(300) == 3.0 and math.isnan(runs[0].return_at(301))
    runs[0].finished = True
    stats = summarise("x", runs, [120, 200, 300], None).budgets
    assert [b.n for b in stats] == [1, 2, 2]
    assert stats[0].mean == 1.0 and stats[0].std == 0.0
    assert stats[1].mean == pytest.approx(6.0) and stats[1].std == pytest.approx(4.0)
    assert stats[2].mean == pytest.approx(11.5)  # 3.0 and 20.0
    assert stats[2].ci_low <= stats[2].mean <= stats[2].ci_high


def test_window_means_each_seeds_evaluations_in_it_then_summarises_over_seeds():
    runs = synthetic([([100, 200, 300, 400], [1.0, 2.0, 4.0, 9.0]), ([150, 350], [10.0, 30.0])])
    assert runs[0].mean_over(200, 300) == 3.0  # both ends count
    assert math.isnan(runs[1].mean_over(200, 300))  # no evaluation in it
    assert runs[0].mean_over(500, 600) == 9.0  # finished before the window: its last
    runs[1].finished = False  # still running at 350: a window past that is not over yet
    assert runs[1].mean_over(100, 350) == 20.0 and math.isnan(runs[1].mean_over(100, 351))
    window = summarise("x", runs, [400], None, window=(150, 350)).window
    assert (window.start, window.end, window.n) == (150, 350, 2)
    assert window.mean == pytest.approx((3.0 + 20.0) / 2) and window.std == pytest.approx(8.5)
    assert window.ci_low <= window.mean <= window.ci_high
    alone = summarise("x", runs, [400], None, window=(100, 400)).window
    assert alone.n == 1 and alone.mean == 4.0  # (1 + 2 + 4 + 9) / 4; the running seed has none
    assert summarise("x", runs, [400], None).window is None


def test_steps_to_threshold_median_iqr_and_count():
    runs = synthetic(
        [
            ([100, 200, 300, 400], [5.0, 9.0, 9.5, 9.0]),  # reaches 9 at 200
            ([100, 200, 300, 400], [10.0, 0.0, 0.0, 0.0]),  # at 100
            ([100, 200, 300, 400], [0.0, 1.0, 2.0, 9.0]),  # at 400
            ([100, 200, 300, 400], [0.0, 1.0, 2.0, 8.9]),  # never
        ]
    )
    t = summarise("x", runs, [400], threshold=9.0).threshold
    assert (t.reached, t.n) == (3, 4)
    assert t.median == 200.0  # of 100, 200, 400
    assert (t.q25, t.q75) == (150.0, 300.0)  # linear interpolation between order statistics
    none = summarise("x", runs[3:], [400], threshold=9.0).threshold
    assert none.reached == 0 and math.isnan(none.median)


def test_compare_groups_globs_and_writes_files(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, offset in enumerate([0.0, 10.0, 20.0]):
        write_run(runs / f"ppo-{seed}", PPO, seed, [1000, 2000, 3000], [offset, offset + 100, 250])
        write_run(runs / f"mbrl-{seed}", MBRL, seed, [500, 1000, 1500], [offset, 300, 320])
    (runs / "notes").mkdir()  # not a run: ignored by the glob
    write_run(runs / "ppo-empty", PPO, 9, [], [])  # no evaluations yet: skipped, with a note
    out = tmp_path / "cmp"
    # overlapping patterns: each run counts once
    result = compare(
        [str(runs / "ppo-*"), str(runs / "mbrl-*"), str(runs / "ppo-0")],
        out,
        budgets=[1000, 2000],
        threshold=250,
        references=["paper MBRL=250"],
    )
    assert {p.name for p in out.iterdir()} == {"curves.png", "summary.csv", "summary.md"}
    by_label = {s.label: s for s in result.summaries}
    assert set(by_label) == {"ppo", "mbrl grad mlp H10"}
    assert by_label["ppo"].seeds == [0, 1, 2] and by_label["mbrl grad mlp H10"].seeds == [0, 1, 2]
    assert [b.mean for b in by_label["ppo"].budgets] == [10.0, 110.0]
    assert [b.mean for b in by_label["mbrl grad mlp H10"].budgets] == [300.0, 320.0]
    assert by_label["ppo"].threshold.median == 3000 and by_label["ppo"].threshold.reached == 3
    assert by_label["mbrl grad mlp H10"].threshold.median == 1000
    assert len(result.skipped) == 1 and "ppo-empty" in result.skipped[0]
    with open(out / "summary.csv", newline="") as f:
        rows = {r["group"]: r for r in csv.DictReader(f)}
    assert float(rows["ppo"]["return_at_2000_mean"]) == 110.0
    assert rows["ppo"]["reached"] == "3"
    md = (out / "summary.md").read_text()
    assert "| ppo | 3 | 10.0 ± 8.2" in md and "3,000 [3,000, 3,000] | 3/3" in md
    assert "mean return" not in md  # no window asked for

    windowed = compare([str(runs / "ppo-*")], tmp_path / "win", window=(2000, 3000))
    (ppo,) = windowed.summaries
    assert ppo.window.mean == pytest.approx(180.0)  # the seeds' means: 175, 180, 185
    with open(tmp_path / "win" / "summary.csv", newline="") as f:
        (row,) = csv.DictReader(f)
    assert float(row["mean_return_2000_3000_mean"]) == pytest.approx(180.0)
    md = (tmp_path / "win" / "summary.md").read_text()
    assert "mean return 2,000–3,000 steps" in md and "| 180.0 ± 4.1 [" in md

    # the CLI expands a quoted pattern itself
    assert main(["compare", str(runs / "*-[01]"), "--out", str(tmp_path / "cli")]) == 0
    printed = capsys.readouterr().out
    assert "ppo" in printed and "2 seed(s)" in printed
    args = ["compare", str(runs / "ppo-*"), "--out", str(tmp_path / "w"), "--window", "0", "3000"]
    assert main(args) == 0
    assert "mean over 0–3,000 123.3 ± 5.4" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nothing-*"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no run folders") and "\n" not in err
    assert main(["compare", "--out", str(tmp_path / "o")]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="LABEL=VALUE"):
        parse_reference("paper 250")
    write_run(tmp_path / "run", PPO, 0, [100], [1.0])
    window = ["compare", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--window"]
    assert main([*window, "300", "200"]) == 2
    assert "0 <= START <= END" in capsys.readouterr().err
    assert parse_reference("a=b=3") == ("a=b", 3.0)


def test_a_run_stopped_short_has_no_return_past_its_end_but_a_solved_one_keeps_its_last(tmp_path):
    write_run(tmp_path / "done", {**MBRL, "total_steps": 300}, 0, [100, 300], [1.0, 2.0])
    write_run(tmp_path / "killed", {**MBRL, "total_steps": 1000}, 1, [100, 300], [5.0, 6.0])
    solved = {**MBRL, "total_steps": 1000, "stop_at_return": 9.0}
    write_run(tmp_path / "solved", solved, 2, [100, 200], [3.0, 9.5])
    runs, _ = load_runs([str(tmp_path / "*")])
    assert [run.finished for run in sorted(runs, key=lambda r: r.seed)] == [True, False, True]
    stats = summarise("x", runs, [300, 1000], None).budgets
    assert [b.n for b in stats] == [3, 2]  # the killed run counts at 300, not at 1000
    assert stats[1].mean == (2.0 + 9.5) / 2


def test_runs_of_several_envs_are_labelled_by_env(tmp_path):
    write_run(tmp_path / "a", PPO, 0, [100], [1.0])
    write_run(tmp_path / "b", {**PPO, "env": "Ant-v5"}, 0, [100], [2.0])
    runs, _ = load_runs([str(tmp_path / "*")])
    assert set(group_runs(runs)) == {"Hopper-v5 ppo", "Ant-v5 ppo"}


def test_a_real_mbrl_run_and_a_zero_baseline_compare(tmp_path):
    loop.train(toy_config(total_steps=300), tmp_path / "mbrl")
    zero = BaselineConfig(
        env=POINT_MASS_ID,
        algo="zero",
        total_steps=300,
        eval_every=100,
        eval_episodes=2,
        progress=False,
    )
    run_baseline(zero, tmp_path / "zero")
    result = compare([str(tmp_path / "*")], tmp_path / "cmp", threshold=-10, log_x=True)
    by_label = {s.label: s for s in result.summaries}
    assert set(by_label) == {"mbrl grad mlp H3 5 Adam steps", "zero"}
    assert [b.budget for b in by_label["zero"].budgets] == [300]
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 0
