"""The model-error analysis (Fig. 5–8) and its ``dynaplan model-error`` command.

The toy point mass ``p' = p + 0.2 a`` has a model that is exact by construction: one ReLU
layer holding ``x`` and ``-x`` and a linear head. Shifting its delta normaliser by ``b``
makes every step off by exactly ``b``, so an ``H``-step prediction is off by ``H · b``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from dynaplan import cli, loop
from dynaplan.analysis import model_error
from dynaplan.buffer import ReplayBuffer
from dynaplan.envs import POINT_MASS_ID
from dynaplan.models import DynamicsModel
from tests.conftest import toy_config

HORIZONS = [1, 5, 10, 20]


def point_mass_model(bias: float = 0.0) -> DynamicsModel:
    """``s' = s + 0.2 a + bias`` exactly (``bias`` added to both coordinates each step)."""
    model = DynamicsModel(2, 2, hidden_size=8, num_layers=1, activation="relu")
    with torch.no_grad():
        eye = torch.eye(4)
        model.hidden[0].weight.copy_(torch.cat([eye, -eye], 1)[None])  # [1, 4, 8]: x, -x
        model.hidden[0].bias.zero_()
        gain = torch.zeros(4, 2)
        gain[2:] = 0.2 * torch.eye(2)  # delta = 0.2 * action
        model.head.weight.copy_(torch.cat([gain, -gain])[None])  # [1, 8, 2]
        model.head.bias.zero_()
        model.target_norm.mean.fill_(bias)
    return model


def point_mass_episode(seed: int = 0) -> model_error.Episode:
    env = gym.make(POINT_MASS_ID)
    rng = np.random.default_rng(seed)
    episode = model_error.collect_episode(env, lambda _: rng.uniform(-0.5, 0.5, 2), seed)
    env.close()
    return episode


@pytest.fixture(scope="module")
def episode() -> model_error.Episode:
    episode = point_mass_episode()
    assert len(episode) == 30  # truncated, not terminated: small steps stay in the box
    return episode


def test_default_features_match_gymnasium_v5_layouts():
    assert model_error.default_features("Hopper-v5", 11) == {
        "torso height": 0,
        "torso angle": 1,
        "x velocity": 5,
    }
    assert model_error.default_features("Walker2d-v5", 17)["x velocity"] == 8
    assert model_error.default_features("Ant-v5", 105) == {"torso height": 0, "x velocity": 13}
    assert model_error.default_features("HalfCheetah-v5", 17) == {"x velocity": 8}
    assert model_error.default_features("InvertedPendulum-v5", 4)["pole angular velocity"] == 3
    shifted = {"exclude_current_positions_from_observation": False}
    assert model_error.default_features("Hopper-v5", 12, shifted)["x velocity"] == 6
    assert model_error.default_features(POINT_MASS_ID, 2) == {"obs[0]": 0, "obs[1]": 1}
    # The indices really are the quantities: Hopper's torso starts at height 1.25.
    env = gym.make("Hopper-v5")
    obs, _ = env.reset(seed=0)
    env.close()
    assert abs(obs[0] - 1.25) < 0.01


def test_exact_model_tracks_the_truth(episode):
    model = point_mass_model()
    one_step = model_error.one_step_predictions(model, episode.obs, episode.actions)
    np.testing.assert_allclose(one_step, episode.next_obs, atol=1e-5)
    rollout = model_error.open_loop_predictions(model, episode.obs, episode.actions, 3, 20)
    np.testing.assert_allclose(rollout, episode.states[4:24], atol=1e-5)
    errors = model_error.horizon_errors(model, episode.states, episode.actions, HORIZONS)
    for h, err in errors.items():
        assert err.shape == episode.states.shape
        assert np.isnan(err[:h]).all() and np.nanmax(err[h:]) < 1e-5


def test_biased_model_error_grows_linearly_with_horizon(episode):
    bias = 0.01
    model = point_mass_model(bias)
    errors = model_error.horizon_errors(model, episode.states, episode.actions, HORIZONS)
    for h, err in errors.items():
        np.testing.assert_allclose(err[h:], h * bias, atol=1e-5)
    rollout = model_error.open_loop_predictions(model, episode.obs, episode.actions, 0, 10)
    drift = np.abs(rollout - episode.states[1:11]).mean(1)
    np.testing.assert_allclose(drift, bias * np.arange(1, 11), atol=1e-5)
    report = model_error.analyse_episode(
        model, episode.obs, episode.actions, episode.next_obs, {"x": 0, "y": 1}, HORIZONS
    )
    for by_h in report.mean_abs_error().values():
        maes = [by_h[h] for h in HORIZONS]
        assert all(a < b for a, b in itertools.pairwise(maes))
    ratio = report.summary()["growth"]["ratio"]
    assert ratio["x"] == pytest.approx(20, rel=1e-3) and ratio["y"] == pytest.approx(20, rel=1e-3)


def test_horizon_errors_match_a_slow_reference_loop():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, hidden_size=16, num_layers=2)  # untrained: far from exact
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(12, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(12, 2)).astype(np.float32)
    horizons = [1, 3, 5, 11, 15]
    fast = model_error.horizon_errors(model, obs, actions, horizons)
    for h in horizons:
        slow = np.full_like(obs, np.nan)
        for t in range(h, len(obs)):
            state = torch.as_tensor(obs[t - h : t - h + 1])
            with torch.no_grad():
                for j in range(t - h, t):
                    state = model.step(state, torch.as_tensor(actions[j : j + 1]))
            slow[t] = np.abs(state[0].numpy() - obs[t])
        np.testing.assert_allclose(fast[h], slow, rtol=1e-5, atol=1e-6)
    assert np.isnan(fast[15]).all()
    open_loop = model_error.open_loop_predictions(model, obs, actions, 9, 10)
    assert open_loop.shape == (3, 3)  # stops at the episode's end


def test_write_report_writes_every_file(episode, tmp_path):
    report = model_error.analyse_episode(
        point_mass_model(0.01),
        episode.obs,
        episode.actions,
        episode.next_obs,
        {"x": 0, "y": 1},
        HORIZONS,
        starts=[0, 65],
        label="test",
    )
    assert list(report.open_loop) == [0, 10]  # 65 moved back so a 20-step rollout fits
    paths = model_error.write_report(report, tmp_path / "out")
    names = {p.name for p in paths}
    assert names == {
        "one_step.png",
        "open_loop_t0.png",
        "open_loop_t10.png",
        "error_vs_time.png",
        "model_error.json",
        "model_error.csv",
    }
    for path in paths:
        assert path.stat().st_size > 0
        if path.suffix == ".png":
            assert path.read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((tmp_path / "out" / "model_error.json").read_text())
    assert {"mean_abs_error", "mean_abs_error_all_dims", "growth", "features", "steps"} <= set(
        summary
    )
    assert set(summary["mean_abs_error"]["x"]) == {"1", "5", "10", "20"}
    assert summary["mean_abs_error"]["x"]["5"] == pytest.approx(0.05, abs=1e-4)
    assert summary["growth"]["long_horizon"] == 20
    rows = (tmp_path / "out" / "model_error.csv").read_text().splitlines()
    assert len(rows) == 1 + len(episode) + 1  # header, states s_0 ... s_T
    assert "x abs error H=20" in rows[0]


def test_episode_selection(episode):
    other = point_mass_episode(seed=1)
    buffer = ReplayBuffer(2, 2)
    for k, ep in enumerate([other, episode]):
        for t in range(len(ep)):
            buffer.add(ep.obs[t], ep.actions[t], 0.0, ep.next_obs[t], False, False, k)
    longest = model_error.episode_from_buffer(buffer)
    assert len(longest) == max(len(other), len(episode))
    np.testing.assert_array_equal(model_error.episode_from_buffer(buffer, 0).obs, other.obs)
    with pytest.raises(model_error.ConfigError, match="no episode 7"):
        model_error.episode_from_buffer(buffer, 7)


# -- the command line --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    config = toy_config(total_steps=300, eval_episodes=1)
    run = tmp_path_factory.mktemp("model_error") / "run"
    loop.train(config, run)
    return run


def test_cli_on_a_run_folder(run_dir, tmp_path, capsys):
    journal = run_dir / "transitions.bin"
    size = journal.stat().st_size
    out = tmp_path / "out"
    assert cli.main(["model-error", str(run_dir), "--out", str(out)]) == 0
    assert journal.stat().st_size == size  # read, not reopened for writing
    assert (out / "one_step.png").stat().st_size > 0
    assert (out / "error_vs_time.png").stat().st_size > 0
    summary = json.loads((out / "model_error.json").read_text())
    assert summary["steps"] == 30 and summary["horizons"] == HORIZONS
    assert set(summary["mean_abs_error"]) == {"obs[0]", "obs[1]"}
    assert "mean absolute error" in capsys.readouterr().out
    fresh = tmp_path / "fresh"
    args = ["model-error", str(run_dir), "--fresh", "random", "--horizons", "1", "3"]
    assert cli.main([*args, "--starts", "0", "--out", str(fresh)]) == 0
    assert json.loads((fresh / "model_error.json").read_text())["horizons"] == [1, 3]
    assert cli.main(["model-error", str(run_dir), "--episode", "0"]) == 0
    assert (run_dir / "model_error" / "model_error.json").is_file()
    mpc = tmp_path / "mpc"
    assert cli.main(["model-error", str(run_dir), "--fresh", "mpc", "--out", str(mpc)]) == 0
    assert "fresh mpc episode" in json.loads((mpc / "model_error.json").read_text())["label"]


def test_cli_with_model_and_buffer(episode, tmp_path):
    point_mass_model().save(tmp_path / "model.pt")
    buffer = ReplayBuffer(2, 2)
    for t in range(len(episode)):
        buffer.add(episode.obs[t], episode.actions[t], 0.0, episode.next_obs[t], False, False, 0)
    buffer.save(tmp_path / "buffer.npz")
    out = tmp_path / "out"
    args = ["--model", str(tmp_path / "model.pt"), "--buffer", str(tmp_path / "buffer.npz")]
    assert cli.main(["model-error", *args, "--env", POINT_MASS_ID, "--out", str(out)]) == 0
    summary = json.loads((out / "model_error.json").read_text())
    assert summary["mean_abs_error_all_dims"]["20"] < 1e-5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/run"], "no run folder"),
        ([], "give a RUN_DIR"),
        (["--model", "/no/model.pt", "--env", POINT_MASS_ID, "--fresh", "zero"], "no model file"),
    ],
)
def test_cli_errors_are_one_line(args, message, capsys):
    assert cli.main(["model-error", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episode", "999"], "no episode 999"),
        (["--horizons", "0"], "horizons must be positive integers, got [0]"),
        (["--open-loop-steps", "-5"], "open_loop_steps must be positive, got -5"),
    ],
)
def test_cli_bad_choices_for_a_run_are_one_line(run_dir, args, message, capsys):
    assert cli.main(["model-error", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
