import dataclasses
import sys

import numpy as np
import pytest

from dynaplan.agents.baselines import BaselineConfig
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID
from dynaplan.errors import ConfigError
from dynaplan.execution import Execution, RunTask, run_all, run_one
from dynaplan.rundir import RunDir
from tests.conftest import toy_config


@pytest.mark.parametrize(
    "execution,message",
    [
        (Execution(jobs=0), "jobs must be positive"),
        (Execution(backend="ray", cpus_per_run=0), "cpus_per_run must be positive"),
        (Execution(backend="ray", gpus_per_run=-1), "gpus_per_run"),
        (Execution(address="auto"), "need --backend ray"),
        (Execution(gpus_per_run=0.5), "need --backend ray"),
        (Execution(scheduler="asha"), "need --backend ray"),
    ],
)
def test_bad_execution_settings_are_config_errors(execution, message):
    with pytest.raises(ConfigError, match=message):
        run_all([], execution)


def test_ray_backend_without_ray_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    task = RunTask(toy_config(), str(tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"pip install 'dynaplan\[ray\]'"):
        run_all([task], Execution(backend="ray"))
    assert main(["experiment", "pendulum", "--backend", "ray", "--out", str(tmp_path)]) == 2
    assert "pip install 'dynaplan[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_that_died_before_its_first_checkpoint_starts_again(tmp_path):
    config = toy_config(total_steps=300)
    run = RunDir.create(tmp_path / "run")
    config.save(run.config)  # what a worker killed during set-up leaves behind
    run_one(config, str(run.path))
    assert run.read_metrics()[-1]["env_steps"] == 300


@pytest.mark.parametrize(
    "config",
    [
        toy_config(total_steps=300),
        BaselineConfig(
            env=POINT_MASS_ID, algo="zero", total_steps=300, eval_every=100, eval_episodes=1
        ),
    ],
    ids=["mbrl", "baseline"],
)
def test_on_metrics_gets_every_row_as_it_is_written(config, tmp_path):
    rows = []
    run_one(config, str(tmp_path / "run"), on_metrics=rows.append)
    written = RunDir(tmp_path / "run").read_metrics()
    assert [r["env_steps"] for r in rows] == [r["env_steps"] for r in written]
    assert [r["eval_return_mean"] for r in rows] == [r["eval_return_mean"] for r in written]


@pytest.mark.parametrize("kind", ["mbrl", "baseline"])
def test_a_folder_made_with_other_settings_is_not_reported_as_the_run_asked_for(kind, tmp_path):
    """A rerun with a larger budget (or any other change) into the same folder is refused
    instead of skipping or resuming the old, smaller run; device, threads and progress may
    differ."""
    small = (
        toy_config(total_steps=300)
        if kind == "mbrl"
        else BaselineConfig(env=POINT_MASS_ID, algo="zero", total_steps=300, eval_every=100)
    )
    run_dir = str(tmp_path / "run")
    run_one(small, run_dir)
    rows = RunDir(run_dir).read_metrics()
    run_one(dataclasses.replace(small, threads=0, progress=True), run_dir)  # finished: skipped
    np.testing.assert_equal(RunDir(run_dir).read_metrics(), rows)
    with pytest.raises(ConfigError, match=r"other settings \(total_steps\)"):
        run_one(dataclasses.replace(small, total_steps=400), run_dir)
    np.testing.assert_equal(RunDir(run_dir).read_metrics(), rows)
