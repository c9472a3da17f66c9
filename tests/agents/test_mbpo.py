import csv
import json

import numpy as np
import pytest
import torch

from dynaplan.agents.mbpo import (
    MBPOConfig,
    MixedReplay,
    SACConfig,
    _new_sac,
    _sb3_buffer,
    add_transitions,
    model_rollout,
    resume_mbpo,
    run_mbpo,
)
from dynaplan.analysis.compare import load_runs
from dynaplan.buffer import ReplayBuffer
from dynaplan.cli import main
from dynaplan.config import ModelConfig
from dynaplan.envs import POINT_MASS_ID, PointMassEnv, make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.models import DynamicsModel
from dynaplan.rundir import METRIC_COLUMNS, RunDir, read_metrics
from dynaplan.tasks.toy import PointMassTask
from dynaplan.types import TransitionBatch
from tests.test_cli import one_line_error
from tests.test_loop import RANDOM_POLICY_RETURN


def toy(**overrides) -> MBPOConfig:
    """MBPO on the point mass in a few hundred steps: tiny ensemble, SAC and rollouts."""
    base = dict(
        env=POINT_MASS_ID,
        total_steps=600,
        random_steps=200,
        model="ensemble",
        dynamics=ModelConfig(
            ensemble_size=3, num_elites=2, hidden_size=32, num_layers=2, max_epochs=20, patience=3
        ),
        model_train_every=100,
        rollout_batch=100,
        rollouts_every=50,
        rollout_max_length=3,
        rollout_grow_from=200,
        rollout_grow_to=600,
        model_buffer_size=2000,
        updates_per_step=4,
        real_ratio=0.1,
        sac=SACConfig(lr=1e-3, batch_size=64, net_arch=(32, 32)),
        eval_every=100,
        eval_episodes=3,
        device="cpu",
        progress=False,
    )
    return MBPOConfig(**{**base, **overrides})


def test_mbpo_learns_the_point_mass_in_a_comparable_run_folder(tmp_path):
    result = run_mbpo(toy(), tmp_path / "run")
    run = RunDir(result.run_dir)
    for path in (run.config, run.metrics, run.checkpoint, run.journal, run.plot):
        assert path.is_file(), path
    with open(run.metrics, newline="") as f:
        assert next(csv.reader(f)) == list(METRIC_COLUMNS)
    rows = read_metrics(run.metrics)
    assert [int(r["env_steps"]) for r in rows] == [100, 200, 300, 400, 500, 600]
    assert all(np.isnan(r["model_val_loss"]) for r in rows[:2])  # random data, no model yet
    assert all(np.isfinite(r["model_train_loss"]) and r["model_val_loss"] > 0 for r in rows[2:])
    final = rows[-1]["eval_return_mean"]
    assert final > -15.0 > RANDOM_POLICY_RETURN, f"final evaluation return {final:.1f}"
    assert len(ReplayBuffer.from_journal(run.journal, 2, 2)) == 600
    config = json.loads(run.config.read_text())
    assert config["kind"] == "mbpo"
    runs, _ = load_runs([str(run.path)])  # dynaplan compare reads it
    assert runs[0].label == "mbpo" and runs[0].returns[-1] == final


def test_rollouts_follow_the_model_policy_and_task_and_stop_at_termination():
    model = DynamicsModel(2, 2, ensemble_size=3, num_elites=2, hidden_size=8, num_layers=1)
    with torch.no_grad():  # every member predicts the delta (0.3, 0): rows drift right
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.3, 0.0]))
    task = PointMassTask()
    start = torch.stack([torch.linspace(-1.0, 2.4, 10), torch.zeros(10)], dim=1)
    policy = lambda obs: -0.5 * obs  # noqa: E731
    length = 4
    batch = model_rollout(model, task, policy, start, length)

    steps_to_leave = torch.floor((PointMassEnv.bound - start[:, 0]) / 0.3) + 1  # x + 0.3k > bound
    assert len(batch.obs) == int(steps_to_leave.clamp(max=length).sum())
    torch.testing.assert_close(batch.next_obs, batch.obs + torch.tensor([0.3, 0.0]))
    torch.testing.assert_close(batch.action, policy(batch.obs))
    torch.testing.assert_close(batch.reward, task.reward(batch.obs, batch.action, batch.next_obs))
    assert torch.equal(batch.terminated, task.terminated(batch.next_obs))
    assert int(batch.terminated.sum()) == int((steps_to_leave <= length).sum())
    assert batch.obs.abs().amax(-1).max() <= PointMassEnv.bound  # no row goes on after the end
    assert len(model_rollout(model, task, policy, start, 1).obs) == 10


def test_the_model_buffer_keeps_the_newest_rows():
    env = make_env(POINT_MASS_ID)
    sac, buffer = (
        _new_sac(toy(), env, torch.device("cpu")),
        _sb3_buffer(5, env, torch.device("cpu")),
    )

    def rows(first: int, n: int) -> TransitionBatch:
        k = torch.arange(first, first + n, dtype=torch.float32)
        pair = torch.stack([k, -k], 1)
        return TransitionBatch(pair, pair / 100, pair + 1, k, k % 2 == 1)

    add_transitions(buffer, sac.policy, rows(0, 3))
    assert buffer.size() == 3
    add_transitions(buffer, sac.policy, rows(3, 4))
    assert buffer.full and buffer.pos == 2
    assert sorted(buffer.rewards[:, 0]) == [2, 3, 4, 5, 6]
    i = int(np.flatnonzero(buffer.rewards[:, 0] == 5)[0])
    np.testing.assert_allclose(buffer.observations[i, 0], [5, -5])
    np.testing.assert_allclose(buffer.next_observations[i, 0], [6, -4])
    np.testing.assert_allclose(
        buffer.actions[i, 0], [0.05, -0.05], rtol=1e-5
    )  # [-1, 1] box: unscaled
    assert buffer.dones[i, 0] == 1
    add_transitions(buffer, sac.policy, rows(10, 8))  # more rows than fit: the newest 5
    assert sorted(buffer.rewards[:, 0]) == [13, 14, 15, 16, 17]


def test_rollout_length_grows_linearly():
    config = toy(
        rollout_min_length=1, rollout_max_length=15, rollout_grow_from=20, rollout_grow_to=100
    )
    lengths = [config.rollout_length(t) for t in (0, 20, 60, 100, 500)]
    assert lengths == [1, 1, 8, 15, 15]


class Killed(Exception):
    pass


def test_resume_after_an_interruption_loses_no_real_transition(tmp_path):
    run = tmp_path / "run"

    def kill_at_the_third_row(row):
        if row["iteration"] == 3:  # the row is written; its checkpoint is not
            raise Killed

    config = toy(total_steps=500, updates_per_step=2)
    with pytest.raises(Killed):
        run_mbpo(config, run, on_metrics=kill_at_the_third_row)
    before = ReplayBuffer.from_journal(run / "transitions.bin", 2, 2)
    assert len(before) == 300
    completed = read_metrics(run / "metrics.csv")[:2]
    with RunDir(run), pytest.raises(CheckpointError, match="in use"):  # a writer holds it
        resume_mbpo(run)
    assert len(ReplayBuffer.from_journal(run / "transitions.bin", 2, 2)) == 300  # untouched

    result = resume_mbpo(run)
    after = ReplayBuffer.from_journal(run / "transitions.bin", 2, 2)
    assert len(after) == 500
    np.testing.assert_array_equal(after.obs[:300], before.obs)  # nothing lost
    np.testing.assert_array_equal(after.action[:300], before.action)
    rows = read_metrics(run / "metrics.csv")
    np.testing.assert_equal(rows, result.metrics)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["env_steps"]) for r in rows] == [100, 200, 300, 400, 500]
    for row, old in zip(rows, completed, strict=False):
        assert row == pytest.approx(old, nan_ok=True)
    with pytest.raises(CheckpointError, match="continued with `dynaplan baseline --resume`"):
        (run / "config.json").write_text(json.dumps({"kind": "baseline"}))
        resume_mbpo(run)


def test_a_resumed_run_refills_the_model_buffer_before_sac_trains(tmp_path, monkeypatch):
    run, model_rows = tmp_path / "run", []
    sample = MixedReplay.sample

    def recording_sample(self, batch_size, env=None):
        model_rows.append(self.model.size())
        return sample(self, batch_size, env)

    def kill_at_the_fifth_row(row):
        if row["iteration"] == 5:  # the checkpoint is the one at 400 env steps
            raise Killed

    monkeypatch.setattr(MixedReplay, "sample", recording_sample)
    with pytest.raises(Killed):
        run_mbpo(toy(), run, on_metrics=kill_at_the_fifth_row)
    kept = torch.load(run / "checkpoint.pt", weights_only=True)["imagined_size"]
    assert kept > 2 * toy().rollout_batch  # several rounds of rollouts by then
    model_rows.clear()
    resume_mbpo(run)
    assert model_rows[0] >= kept  # not the one round an empty buffer would get


def test_config_round_trips_through_json(tmp_path):
    config = toy(env_kwargs={"max_episode_steps": 20})
    config.save(tmp_path / "config.json")
    assert MBPOConfig.load(tmp_path / "config.json") == config
    assert MBPOConfig().validate().eval_grid()[:2] == [5000, 10_000]  # the Hopper defaults


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(model="gp"), "unknown model"),
        (dict(total_steps=0), "total_steps must be positive"),
        (dict(random_steps=600), "random_steps"),
        (dict(random_steps=0), "the first model needs data"),
        (dict(real_ratio=1.5), "real_ratio"),
        (dict(rollout_min_length=0), "rollout_min_length"),
        (dict(rollout_grow_from=700, rollout_grow_to=600), "rollout_grow_from"),
        (dict(rollout_batch=101), "multiple of the model's elites"),
        (dict(sac=SACConfig(gamma=1.0)), "sac.gamma"),
        (dict(dynamics=ModelConfig(ensemble_size=3, num_elites=4)), "num_elites"),
        (dict(dynamics=ModelConfig(lr=-1.0)), r"dynamics\.lr must be > 0"),
        (dict(env="Pendulum-v1"), "dynaplan.tasks.register"),
    ],
)
def test_bad_configs_are_refused(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run_mbpo(toy(**overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


TINY_CLI = [
    "mbpo",
    "--env",
    POINT_MASS_ID,
    "--no-progress",
    "--device",
    "cpu",
    "--total-steps",
    "150",
    "--random-steps",
    "100",
    "--model",
    "mlp",
    "--dynamics.hidden-size",
    "16",
    "--dynamics.max-epochs",
    "3",
    "--rollout-batch",
    "20",
    "--rollouts-every",
    "25",
    "--updates-per-step",
    "1",
    "--sac.batch-size",
    "16",
    "--sac.net-arch",
    "16",
    "16",
    "--eval-every",
    "50",
    "--eval-episodes",
    "1",
]


def test_cli_runs_evaluates_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main([*TINY_CLI, "--out", str(run)]) == 0
    assert "done: 150 env steps" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["sac"]["net_arch"] == [16, 16]
    assert main(["evaluate", str(run), "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    assert main(["mbpo", "--resume", str(run)]) == 0  # finished: nothing left to do
    assert len(read_metrics(run / "metrics.csv")) == 3
    assert main([*TINY_CLI, "--out", str(run)]) == 2
    assert "already holds a run" in one_line_error(capsys)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--real-ratio", "2"], "real_ratio must be in [0, 1]"),
        (["--rollout-batch", "7", "--model", "ensemble"], "multiple of the model's elites"),
        (["--env", "Nope-v0"], "Nope-v0"),
        (["--resume", "/nonexistent/run"], "with --resume, no flag can"),  # nor --out
    ],
)
def test_cli_rejects_bad_input_in_one_line(args, message, capsys, tmp_path):
    assert main([*TINY_CLI, *args, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_cli_resume_of_a_missing_folder_says_so(capsys, tmp_path):
    assert main(["mbpo", "--resume", str(tmp_path / "run")]) == 2
    assert "no run folder" in one_line_error(capsys)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mbpo_trains_and_rolls_out_on_cuda(tmp_path):
    result = run_mbpo(toy(device="cuda", model="pets"), tmp_path / "run")
    final = result.metrics[-1]["eval_return_mean"]
    assert final > -15.0, f"final evaluation return on CUDA {final:.1f}"
    np.testing.assert_equal(resume_mbpo(tmp_path / "run").metrics, result.metrics)  # NaN-aware
