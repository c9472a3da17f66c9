import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dynaplan.agents.baselines import (
    ZOO,
    BaselineConfig,
    _new_model,
    load_baseline_agent,
    resume_baseline,
    run_baseline,
)
from dynaplan.cli import main
from dynaplan.envs import POINT_MASS_ID, make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.evaluation import evaluate, evaluation_seed
from dynaplan.rundir import METRIC_COLUMNS, RunDir, read_metrics

TINY = {
    "ppo": dict(n_steps=64, batch_size=32, n_epochs=2),
    "sac": dict(buffer_size=200, learning_starts=50, batch_size=32),
    "zero": {},
    "random": {},
}


def toy(algo: str, **overrides) -> BaselineConfig:
    base = dict(
        env=POINT_MASS_ID,
        algo=algo,
        total_steps=300,
        eval_every=100,
        eval_episodes=2,
        progress=False,
        algo_kwargs=TINY.get(algo, {}),
    )
    return BaselineConfig(**{**base, **overrides})


def header(run_dir) -> list[str]:
    with open(RunDir(run_dir).metrics, newline="") as f:
        return next(csv.reader(f))


def last_eval_reproduces(run_dir, rows) -> None:
    """The checkpointed agent scores the last row's return again on the same episodes."""
    agent, config = load_baseline_agent(run_dir)
    seed = evaluation_seed(config.seed, int(rows[-1]["iteration"]))
    again = evaluate(agent, make_env(config.env), config.eval_episodes, seed)
    assert again.mean == pytest.approx(rows[-1]["eval_return_mean"])


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_sb3_run_folder_matches_a_train_run(algo, tmp_path):
    result = run_baseline(toy(algo), tmp_path / "run")
    run = RunDir(result.run_dir)
    for path in (run.config, run.metrics, run.checkpoint, run.plot):
        assert path.is_file(), path
    assert header(run.path) == list(METRIC_COLUMNS)
    rows = read_metrics(run.metrics)
    np.testing.assert_equal(rows, result.metrics)  # (NaN == NaN here)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert [int(r["env_steps"]) for r in rows] == [100, 200, 300]
    for r in rows:
        for column in ("model_train_loss", "model_val_loss", "plan_ms_per_step", "model_fit_s"):
            assert np.isnan(r[column])
        assert np.isfinite(r["eval_return_mean"]) and r["eval_length_mean"] > 0
    assert np.isfinite(rows[-1]["train_return"])  # point-mass episodes last at most 30 steps
    assert np.diff([r["episodes"] for r in rows]).min() > 0
    config = json.loads(run.config.read_text())
    assert config["kind"] == "baseline" and config["algo"] == algo
    files = sorted(p.name for p in (run.path / "sb3").iterdir())
    expected = ["model_0000000300.zip"] + (
        ["replay_buffer_0000000300.pkl"] if algo == "sac" else []
    )
    assert files == expected  # older checkpoints are gone
    last_eval_reproduces(run.path, rows)


@pytest.mark.parametrize("algo", ["zero", "random"])
def test_fixed_policies_are_evaluated_on_the_grid(algo, tmp_path):
    result = run_baseline(toy(algo, total_steps=250), tmp_path / "a")
    rows = result.metrics
    assert header(result.run_dir) == list(METRIC_COLUMNS)
    assert [int(r["env_steps"]) for r in rows] == [100, 200, 250]
    assert all(np.isnan(r["train_return"]) and r["episodes"] == 0 for r in rows)
    other = run_baseline(toy(algo, total_steps=250, seed=1), tmp_path / "b").metrics
    # each run seed is evaluated from its own start states, so even the zero policy differs
    assert [r["eval_return_mean"] for r in rows] != [r["eval_return_mean"] for r in other]
    again = run_baseline(toy(algo, total_steps=250), tmp_path / "c").metrics
    assert [r["eval_return_mean"] for r in rows] == [r["eval_return_mean"] for r in again]


def test_zoo_preset_normalises_observations_for_evaluation(tmp_path):
    # InvertedPendulum's zoo entry has n_steps=32 and VecNormalize; untrained episodes are short
    config = BaselineConfig(
        env="InvertedPendulum-v5",
        algo="ppo",
        preset="zoo",
        total_steps=64,
        eval_every=32,
        eval_episodes=2,
        progress=False,
    )
    with pytest.warns(UserWarning, match="mini-batch size of 64"):  # rl-zoo3's own choice
        result = run_baseline(config, tmp_path / "run")
    assert {p.name for p in (result.run_dir / "sb3").iterdir()} == {
        "model_0000000064.zip",
        "vecnormalize_0000000064.pkl",
    }
    agent, _ = load_baseline_agent(result.run_dir)
    assert agent.normalizer is not None and agent.normalizer.obs_rms.count > 1
    last_eval_reproduces(result.run_dir, result.metrics)


def test_sac_buffer_is_no_larger_than_the_run():
    model = _new_model(toy("sac", algo_kwargs={}), torch.device("cpu"))
    assert model.replay_buffer.buffer_size == 300


def test_zoo_table_covers_the_papers_envs():
    for env in ("Hopper-v5", "InvertedPendulum-v5", "Ant-v5"):
        assert ("ppo", env) in ZOO
    for env in ("Hopper-v5", "Ant-v5"):
        assert ("sac", env) in ZOO
    hopper = BaselineConfig(env="Hopper-v5", preset="zoo", algo_kwargs={"n_steps": 64})
    params = hopper.hyperparams()
    assert params.normalize and params.kwargs["n_steps"] == 64 and params.kwargs["gamma"] == 0.999


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(algo="nope"), "unknown algo"),
        (dict(preset="tuned"), "unknown preset"),
        (dict(eval_every=0), "eval_every must be positive"),
        (dict(algo="zero", algo_kwargs={"n_steps": 8}), "does not learn"),
        (dict(algo="sac", env="InvertedPendulum-v5", preset="zoo"), "no tuned sac"),
        (dict(algo_kwargs={"n_stepz": 8}), "rejects its hyperparameters"),
        (dict(env="CartPole-v1", algo="zero"), "Discrete"),
    ],
)
def test_bad_configs_are_refused_before_the_folder_exists(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_baseline(toy(**{"algo": "ppo", **overrides}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_existing_runs_are_not_overwritten_and_bad_folders_not_resumed(tmp_path):
    run_baseline(toy("zero"), tmp_path / "zero")
    with pytest.raises(CheckpointError, match="already holds a run"):
        run_baseline(toy("random"), tmp_path / "zero")
    with pytest.raises(CheckpointError, match="no run folder"):
        resume_baseline(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json: it is not a run folder"):
        resume_baseline(tmp_path / "half")
    mbrl = tmp_path / "mbrl"
    mbrl.mkdir()
    (mbrl / "config.json").write_text(json.dumps({"planner": "grad", "env": POINT_MASS_ID}))
    torch.save({}, mbrl / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="dynaplan train --resume"):
        resume_baseline(mbrl)
    with RunDir(tmp_path / "zero"), pytest.raises(CheckpointError, match="in use"):
        resume_baseline(tmp_path / "zero")  # while another writer holds the folder
    (tmp_path / "zero" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        resume_baseline(tmp_path / "zero")


def test_corrupt_sb3_files_are_a_checkpoint_error(tmp_path):
    result = run_baseline(toy("ppo", total_steps=100), tmp_path / "run")
    (result.run_dir / "sb3" / "model_0000000100.zip").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="missing or corrupt"):
        resume_baseline(result.run_dir)


RESUME_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from dynaplan.agents.baselines import BaselineConfig, resume_baseline, run_baseline
config = BaselineConfig(
    env="dynaplan/PointMass-v0", algo="ppo", total_steps=1500, eval_every=100, eval_episodes=1,
    progress=False, algo_kwargs=dict(n_steps=64, batch_size=32, n_epochs=1),
)
run_baseline(config, sys.argv[1]) if sys.argv[2] == "new" else resume_baseline(sys.argv[1])
"""


def test_resume_after_sigkill_continues_the_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(run.path), "new"], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:  # kill after two evaluations
        if len(read_metrics(run.metrics)) >= 2:
            break
        time.sleep(0.02)
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    checkpointed = int(run.load_checkpoint()["iteration"])
    before = read_metrics(run.metrics)
    assert 1 <= checkpointed < 15

    rows = resume_baseline(run.path).metrics
    np.testing.assert_equal(rows, read_metrics(run.metrics))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 16))
    assert [int(r["env_steps"]) for r in rows] == list(range(100, 1501, 100))
    np.testing.assert_equal(rows[:checkpointed], before[:checkpointed])  # continued
    assert np.diff([r["wall_s"] for r in rows]).min() > 0
    assert np.diff([r["episodes"] for r in rows]).min() >= 0
    assert sorted(p.name for p in (run.path / "sb3").iterdir()) == ["model_0000001500.zip"]
    np.testing.assert_equal(resume_baseline(run.path).metrics, rows)  # finished stays finished


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_cli_baseline(tmp_path, capsys):
    assert main(["baseline", "--algo", "nope", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown algo" in one_line_error(capsys)
    assert not (tmp_path / "bad").exists()
    args = ["baseline", "--env", POINT_MASS_ID, "--algo", "random", "--total-steps", "200"]
    args += ["--eval-every", "100", "--eval-episodes", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "r")]) == 0
    assert "done: 200 env steps" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "r")]) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert main(["baseline", "--resume", str(tmp_path / "r")]) == 0
    assert main(["baseline", "--resume", str(tmp_path / "none")]) == 2
    assert "no run folder" in one_line_error(capsys)


def test_rows_written_after_the_last_checkpoint_are_redone_once(tmp_path, monkeypatch):
    from dynaplan.agents import baselines

    real_save, calls = baselines.Recorder.save, []

    def killed_before_the_second_checkpoint(recorder, env_steps):
        calls.append(env_steps)
        if env_steps == 200:  # its metrics row is written already
            raise KeyboardInterrupt
        real_save(recorder, env_steps)

    monkeypatch.setattr(baselines.Recorder, "save", killed_before_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_baseline(toy("random"), tmp_path / "run")
    assert [int(r["env_steps"]) for r in read_metrics(tmp_path / "run" / "metrics.csv")] == [
        100,
        200,
    ]
    monkeypatch.setattr(baselines.Recorder, "save", real_save)
    resumed = resume_baseline(tmp_path / "run").metrics
    assert [int(r["env_steps"]) for r in resumed] == [100, 200, 300]
    fresh = run_baseline(toy("random"), tmp_path / "fresh").metrics
    # the random policy's generator is checkpointed too, so the resumed run is exact
    assert [r["eval_return_mean"] for r in resumed] == [r["eval_return_mean"] for r in fresh]


def test_a_run_of_another_kind_is_not_resumed_as_this_kind(tmp_path):
    from dynaplan.agents.mbpo import resume_mbpo

    run = run_baseline(toy("zero"), tmp_path / "run").run_dir
    with pytest.raises(CheckpointError, match="cannot be resumed as a 'mbpo' run"):
        resume_mbpo(run)
