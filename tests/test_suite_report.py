"""benchmarks/suite.py: only finished runs become seeds; IQMs and intervals are rliable's."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SPEC = importlib.util.spec_from_file_location(
    "suite", Path(__file__).parents[1] / "benchmarks" / "suite.py"
)
suite = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(suite)


def fake_run(folder: Path, seed: int, steps: list[int], returns: list[float], total: int) -> Path:
    folder.mkdir(parents=True)
    config = {"env": "Hopper-v5", "seed": seed, "total_steps": total, "threads": 1}
    (folder / "config.json").write_text(json.dumps(config))
    with (folder / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["env_steps", "eval_return_mean", "policy_eval_return", "wall_s"])
        for i, (step, value) in enumerate(zip(steps, returns, strict=True)):
            writer.writerow([step, value, value / 2, 10.0 * (i + 1)])
    return folder


def test_only_a_finished_run_is_added_as_a_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "SUITE", tmp_path / "suite")
    unfinished = fake_run(tmp_path / "a", 0, [5000, 10000], [1.0, 2.0], total=20000)
    with pytest.raises(SystemExit, match="not a finished run"):
        suite.add(unfinished, "default", commit="abc")
    finished = fake_run(tmp_path / "b", 3, [5000, 10000], [1.0, 2.0], total=10000)
    target = suite.add(finished, "default", commit="abc")
    assert target == tmp_path / "suite" / "Hopper-v5" / "default" / "seed_3"
    info = json.loads((target / "run.json").read_text())
    assert info["commit"] == "abc" and info["wall_s"] == 20.0 and info["env_steps_per_s"] == 500.0
    with pytest.raises(SystemExit, match="already holds"):
        suite.add(finished, "default", commit="abc")


def test_curves_are_read_at_a_budget_by_interpolation_and_not_past_their_end():
    steps, values = np.array([0.0, 10.0, 20.0]), np.array([0.0, 100.0, np.nan])
    assert suite._at(steps, values, 5) == 50.0
    assert np.isnan(suite._at(steps, values, 15))  # past the last finite evaluation


def test_the_interval_is_rliables_iqm_with_a_bootstrap_around_it():
    scores = np.array([100.0, 900.0, 1000.0, 1100.0, 5000.0, 1050.0, 950.0, 20.0])
    iqm, low, high = suite._interval(scores, reps=500)
    assert iqm == pytest.approx(stats.trim_mean(scores, 0.25))
    assert low <= iqm <= high and high - low > 0
