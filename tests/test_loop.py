import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from dynaplan import loop, tasks
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import ModelConfig, PlannerConfig, ValueConfig
from dynaplan.envs import make_env
from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.rundir import METRIC_COLUMNS, RunDir, last_evaluation, read_metrics
from dynaplan.types import Propagation
from tests.conftest import PLANNER_OPTIONS, toy_config

RANDOM_POLICY_RETURN = -35.0  # see PointMassEnv's docstring


@pytest.mark.parametrize("planner", list(PLANNER_OPTIONS))
def test_loop_solves_the_point_mass_with_every_planner(planner, tmp_path):
    result = loop.train(toy_config(planner), tmp_path / "run")
    assert [int(r["env_steps"]) for r in result.metrics] == [300, 400]
    final = result.metrics[-1]["eval_return_mean"]
    assert final > -8.0, f"{planner}: final evaluation return {final:.1f}"


def test_an_ensemble_with_a_disagreement_penalty_solves_the_point_mass(tmp_path):
    config = toy_config(model="ensemble")
    config.search.disagreement_penalty = 1.0
    final = loop.train(config, tmp_path / "run").metrics[-1]["eval_return_mean"]
    assert final > -8.0, f"final evaluation return {final:.1f}"


def test_run_folder_layout(tmp_path):
    config = toy_config(model="pets", search=PLANNER_OPTIONS["grad"])
    config.search.particles = 5
    config.search.propagation = Propagation.TSINF
    result = loop.train(config, tmp_path / "run")
    run = RunDir(result.run_dir)
    for path in (run.config, run.metrics, run.checkpoint, run.journal, run.plot, run.model):
        assert path.is_file(), path
    assert json.loads(run.config.read_text())["model"] == "pets"
    rows = read_metrics(run.metrics)
    assert set(METRIC_COLUMNS) <= set(rows[0])
    assert all(np.isfinite(r["plan_ms_per_step"]) and r["plan_ms_per_step"] > 0 for r in rows)
    assert all(r["model_fit_s"] > 0 and r["eval_s"] > 0 for r in rows)
    assert all(np.isnan(r["value_fit_s"]) and np.isnan(r["policy_fit_s"]) for r in rows)
    buffer = ReplayBuffer.from_journal(run.journal, 2, 2)
    assert len(buffer) == 400
    assert buffer.truncated[199]  # the random-data episode ends where MPC takes over


def test_eval_every_evaluates_every_nth_iteration_and_always_the_last(tmp_path):
    reported = []
    config = toy_config(total_steps=500, eval_every=2)  # iterations 1, 2, 3
    result = loop.train(config, tmp_path / "run", on_metrics=reported.append)
    rows = read_metrics(RunDir(result.run_dir).metrics)
    evaluated = [bool(np.isfinite(r["eval_return_mean"])) for r in rows]
    assert evaluated == [False, True, True]
    assert np.isnan(rows[0]["eval_return_std"]) and rows[0]["model_val_loss"] > 0
    assert [r["iteration"] for r in reported] == [2, 3]  # Ray and sweeps see evaluations only
    assert last_evaluation(rows) == rows[-1]
    assert last_evaluation(rows[:2]) == rows[1] and last_evaluation(rows[:1]) is None


def test_snapshots_keep_each_evaluated_controller(monkeypatch, tmp_path):
    evaluated = []  # the model weights of each evaluation, as the loop evaluated them

    def recording(agent, *args):
        evaluated.append({k: v.clone() for k, v in agent.model.state_dict().items()})
        return evaluate_as_trained(agent, *args)

    evaluate_as_trained = loop._evaluate
    monkeypatch.setattr(loop, "_evaluate", recording)
    config = toy_config(total_steps=500, eval_every=2, snapshots=True)  # evaluated at 400, 500
    run = RunDir(loop.train(config, tmp_path / "run").run_dir)
    assert run.snapshot_steps() == [400, 500]

    def same(model: dict, weights: dict) -> bool:
        return all(torch.equal(model[name], w) for name, w in weights.items())

    for steps, weights in zip((400, 500), evaluated, strict=True):
        snapshot = run.load_checkpoint(at_steps=steps)
        assert (snapshot["env_steps"], snapshot["trained"]) == (steps, False)
        assert same(snapshot["model"], weights)
    assert not same(evaluated[0], evaluated[1])
    agent, _ = load_mpc_agent(run.path, "cpu", at_steps=400)
    assert same(agent.model.state_dict(), evaluated[0])
    with pytest.raises(CheckpointError, match="no snapshot at 450 env steps; it has 400, 500"):
        run.load_checkpoint(at_steps=450)
    # a kill between saving the checkpoint and linking it loses no snapshot: resume takes it
    (run.snapshots / "step_0000500.pt").unlink()
    loop.resume(run.path)
    assert run.snapshot_steps() == [400, 500]
    assert same(run.load_checkpoint(at_steps=500)["model"], evaluated[1])


def test_a_run_without_snapshots_says_how_to_get_them(tmp_path):
    run = RunDir(loop.train(toy_config(total_steps=300), tmp_path / "run").run_dir)
    assert not run.snapshots.exists()
    with pytest.raises(CheckpointError, match="only runs trained with --snapshots"):
        run.load_checkpoint(at_steps=300)


def test_from_scratch_retraining_runs(tmp_path):
    config = toy_config(total_steps=300)
    config.dynamics.from_scratch = True
    result = loop.train(config, tmp_path / "run")
    assert result.metrics[-1]["eval_return_mean"] > RANDOM_POLICY_RETURN


def test_same_seed_same_actions(tmp_path):
    a = loop.train(toy_config(total_steps=300), tmp_path / "a")
    b = loop.train(toy_config(total_steps=300), tmp_path / "b")
    actions_a = ReplayBuffer.from_journal(a.run_dir / "transitions.bin", 2, 2).action
    actions_b = ReplayBuffer.from_journal(b.run_dir / "transitions.bin", 2, 2).action
    np.testing.assert_array_equal(actions_a, actions_b)


def test_a_flipped_ant_ends_its_training_episode_as_truncated(tmp_path):
    config = toy_config(
        env="Ant-v5",
        env_kwargs={"include_cfrc_ext_in_observation": False, "max_episode_steps": 50},
        total_steps=300,
        eval_episodes=1,
        reset_below_upright=0.9,  # a tilt of 26 degrees: random flailing gets there
    )
    result = loop.train(config, tmp_path / "run")
    buffer = ReplayBuffer.from_journal(result.run_dir / "transitions.bin", 27, 8)
    task = tasks.get(config.env, make_env(config.env, **config.env_kwargs))
    tilted = task.upright(torch.from_numpy(buffer.next_obs)).numpy() < 0.9
    assert tilted.any()
    assert (buffer.truncated | buffer.terminated)[tilted].all()  # each ends its episode
    assert not buffer.terminated[tilted].any()  # the env itself plays on


def test_an_existing_run_is_never_overwritten(tmp_path):
    loop.train(
        toy_config(total_steps=250, random_steps=200, steps_per_iteration=50), tmp_path / "r"
    )
    with pytest.raises(CheckpointError, match="already holds a run"):
        loop.train(toy_config(), tmp_path / "r")


def test_resume_rejects_missing_and_corrupt_folders(tmp_path):
    with pytest.raises(CheckpointError, match="no run folder"):
        loop.resume(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match=r"no config\.json: it is not a run folder"):
        loop.resume(tmp_path / "half")
    run = tmp_path / "corrupt"
    loop.train(toy_config(total_steps=250, steps_per_iteration=50), run)
    (run / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        loop.resume(run)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(planner="ilqr"), "unknown planner"),
        (dict(model="gp"), "unknown model"),
        (dict(horizon=0), "horizon must be positive"),
        (dict(total_steps=-5), "total_steps must be positive"),
        (dict(eval_every=0), "eval_every must be positive"),
        (dict(random_steps=500), "random_steps"),
        (dict(search=PlannerConfig(replan_every=4)), r"lower it with --search\.replan-every"),
        (dict(search=PlannerConfig(lr=-0.1)), r"search\.lr must be positive, got -0\.1"),
        (dict(search=PlannerConfig(num_candidates=0)), r"search\.num_candidates must be pos"),
        ({"planner": "cem", "search": PlannerConfig(alpha=1.0)}, r"search\.alpha must be in"),
        ({"planner": "cem", "search": PlannerConfig(population=10, num_elites=20)}, "2 <= num"),
        ({"planner": "cem", "search": PlannerConfig(population=30)}, "50 elites of 30"),
        ({"planner": "cem-grad", "search": PlannerConfig(num_elites=1)}, "1 elites of 200"),
        (dict(search=PlannerConfig(iterations=-1)), r"search\.iterations cannot be negative"),
        (dict(dynamics=ModelConfig(ensemble_size=0)), r"dynamics\.ensemble_size must be pos"),
        (dict(dynamics=ModelConfig(max_updates=0)), r"dynamics\.max_updates must be pos"),
        (dict(dynamics=ModelConfig(patience=-1)), r"dynamics\.patience must be >= 0"),
        (dict(dynamics=ModelConfig(lr=-1.0)), r"dynamics\.lr must be > 0, got -1\.0"),
        (dict(dynamics=ModelConfig(weight_decay=-0.1)), r"dynamics\.weight_decay must be"),
        (dict(dynamics=ModelConfig(val_fraction=1.5)), r"dynamics\.val_fraction must be in"),
        (dict(dynamics=ModelConfig(activation="gelu")), "unknown activation"),
        (dict(exploration_noise=-1.0), "exploration_noise and threads cannot be negative"),
        (dict(threads=-1), "exploration_noise and threads cannot be negative"),
        (dict(exploration_noise=float("nan")), "exploration_noise and threads cannot be neg"),
        (dict(value=ValueConfig(gamma=1.5)), r"value\.gamma must be in \(0, 1\), got 1\.5"),
    ],
)
def test_bad_configs_are_refused(overrides, message, tmp_path):
    """Before any step and before the run folder exists, so the same --out works once fixed."""
    with pytest.raises(ConfigError, match=message):
        loop.train(toy_config(**overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "planner,field", [("grad", "iterations"), ("cem", "iterations"), ("mppi", "iterations"),
                      ("cem-grad", "grad_steps")],
)  # fmt: skip
def test_zero_refinement_steps_are_allowed(planner, field, tmp_path):
    """0 Adam steps or refits is a valid setting: the warm start (or CEM alone) plans."""
    search = dataclasses.replace(PLANNER_OPTIONS.get(planner, PlannerConfig()), **{field: 0})
    config = toy_config(planner, total_steps=300, search=search)
    assert np.isfinite(loop.train(config, tmp_path / "run").metrics[-1]["eval_return_mean"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("planner", ["grad", "cem"])
def test_the_loop_trains_and_plans_on_cuda(planner, tmp_path):
    """Model training and whole-plan CUDA graphs on a GPU solve the toy like the CPU does."""
    result = loop.train(toy_config(planner, device="cuda"), tmp_path / "run")
    final = result.metrics[-1]["eval_return_mean"]
    assert final > -8.0, f"{planner} on CUDA: final evaluation return {final:.1f}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_value_and_prior_train_and_plan_on_cuda_and_load_on_the_cpu(tmp_path):
    """Critics, the prior's SVG(H) updates, its start-state check and the planner's proposals
    all on the GPU; the checkpoint then loads on a machine without one."""
    config = toy_config(device="cuda", total_steps=500)
    config.value = ValueConfig(enabled=True, updates=50)
    config.policy.enabled, config.policy.check_horizon = True, 20
    rows = loop.train(config, tmp_path / "run").metrics
    assert rows[-1]["eval_return_mean"] > -8.0, rows[-1]
    assert rows[-1]["policy_eval_return"] > -15.0, rows[-1]  # random actions score about -35
    agent, _ = load_mpc_agent(tmp_path / "run", device="cpu")
    assert next(agent.policy.parameters()).device.type == "cpu"
    assert next(agent.terminal_value.parameters()).device.type == "cpu"


def test_missing_cuda_is_a_config_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        loop.train(toy_config(device="cuda"), tmp_path / "run")


HOLD_SCRIPT = """
import sys, time
from dynaplan.rundir import RunDir
with RunDir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_run_folder_has_one_writer_and_a_killed_writer_lets_go(tmp_path):
    run = loop.train(toy_config(total_steps=300), tmp_path / "run").run_dir
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(run)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        rows = read_metrics(run / "metrics.csv")
        with pytest.raises(CheckpointError, match=r"in use.*--resume"):
            loop.resume(run)
        np.testing.assert_equal(read_metrics(run / "metrics.csv"), rows)  # nothing written
    finally:
        holder.kill()
        holder.wait()
    np.testing.assert_equal(loop.resume(run).metrics, rows)  # the killed writer's lock is gone


RESUME_SCRIPT = """
import sys
from dynaplan import loop
from tests.conftest import toy_config
config = toy_config(total_steps=700, steps_per_iteration=100)
config.value.enabled = config.policy.enabled = sys.argv[3] == "value+policy"
config.value.updates = config.policy.updates = 20
loop.train(config, sys.argv[1]) if sys.argv[2] == "new" else loop.resume(sys.argv[1])
"""


@pytest.mark.parametrize("parts", ["model", "value+policy"])
def test_resume_after_sigkill_loses_no_transition(parts, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(run), "new", parts], env=env)
    journal = run / "transitions.bin"
    deadline = time.time() + 120
    # kill once MPC is collecting (past the random data and the first iteration)
    while time.time() < deadline and child.poll() is None:
        if journal.exists() and journal.stat().st_size > 0:
            collected = len(ReplayBuffer.from_journal(journal, 2, 2))
            if collected >= 330:
                break
        time.sleep(0.05)
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    before = ReplayBuffer.from_journal(journal, 2, 2)
    completed_rows = read_metrics(run / "metrics.csv")
    trained_before_kill = torch.load(run / "checkpoint.pt", weights_only=True)["trained"]

    subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, str(run), "resume", parts], env=env, check=True
    )
    after = ReplayBuffer.from_journal(journal, 2, 2)
    assert len(after) == 700
    np.testing.assert_array_equal(after.obs[: len(before)], before.obs)  # nothing lost
    np.testing.assert_array_equal(after.action[: len(before)], before.action)
    rows = read_metrics(run / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    for row, completed in zip(rows, completed_rows, strict=False):  # the file is continued
        assert row == pytest.approx(completed, nan_ok=True)
    assert [int(r["env_steps"]) for r in rows] == [300, 400, 500, 600, 700]
    resumed = rows[len(completed_rows)]  # its training ran before the kill, or after the resume
    columns = ["model_fit_s"] + (["value_fit_s", "policy_fit_s"] if parts != "model" else [])
    for column in columns:
        assert np.isnan(resumed[column]) == trained_before_kill, (column, resumed[column])


def test_tensorboard_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("no tensorboard")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError, match=r"dynaplan\[tensorboard\]"):
        loop.train(toy_config(tensorboard=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_metrics_of_a_run_begun_by_an_older_version_gain_the_new_columns(tmp_path):
    run = RunDir(tmp_path)
    old_columns = [c for c in METRIC_COLUMNS if not c.startswith("policy")]
    run.metrics.write_text(",".join(old_columns) + "\n" + ",".join(["1"] * len(old_columns)) + "\n")
    run.append_metrics({column: 2.0 for column in METRIC_COLUMNS})
    rows = run.read_metrics()
    assert list(rows[0]) == list(METRIC_COLUMNS)
    assert rows[0]["env_steps"] == 1.0 and np.isnan(rows[0]["policy_return"])
    assert rows[1]["policy_return"] == 2.0
    old_line = run.metrics.read_text().splitlines()[1].split(",")  # cells kept as written
    assert set(old_line) == {"1", ""}


def test_dropping_metrics_after_a_checkpoint_keeps_the_earlier_rows_as_written(tmp_path):
    run = RunDir(tmp_path)
    for iteration in (1, 2, 3):
        run.append_metrics({"iteration": iteration, "env_steps": 100 * iteration})
    before = run.metrics.read_text().splitlines()
    run.keep_metrics_up_to(2)
    assert run.metrics.read_text().splitlines() == before[:3]
    assert not run.metrics.with_name("metrics.csv.tmp").exists()


def test_a_branch_starts_where_its_source_stood_and_goes_on_with_its_changes(tmp_path):
    config = toy_config(total_steps=500, eval_every=2, snapshots=True)  # snapshots at 400, 500
    config.value.enabled = config.policy.enabled = True
    config.value.updates = config.policy.updates = 20
    source = RunDir(loop.train(config, tmp_path / "source").run_dir)
    source_journal = source.journal.read_bytes()
    changes = {"search.lr": 0.05, "dynamics.lr": 0.01, "value.lr": 0.003, "policy.lr": 0.002}
    changed = RunDir(loop.branch(source.path, 400, tmp_path / "changed", changes).run_dir)
    assert source.journal.read_bytes() == source_journal  # the source is only read
    saved = json.loads(changed.config.read_text())
    assert saved["search"]["lr"] == 0.05 and saved["seed"] == config.seed
    assert json.loads((changed.path / "branch.json").read_text()) == {
        "source": str(source.path.resolve()),
        "at_steps": 400,
        "changes": changes,
        "reseed": None,
    }
    before, after = (ReplayBuffer.from_journal(r.journal, 2, 2) for r in (source, changed))
    assert len(after) == 500
    np.testing.assert_array_equal(after.action[:400], before.action[:400])
    # the optimizers go on with their moments from the snapshot and the lr given
    checkpoint = changed.load_checkpoint()
    learning_rates = [
        checkpoint[part]["optimizer"]["param_groups"][0]["lr"]
        for part in ("trainer", "value_trainer", "policy_trainer")
    ]
    assert learning_rates == [0.01, 0.003, 0.002]
    rows = changed.read_metrics()
    assert [r["env_steps"] for r in rows] == [300, 400, 500]
    np.testing.assert_equal(rows[:2], source.read_metrics()[:2])  # the source's, up to 400


def test_branches_repeat_each_other_unless_reseeded(tmp_path):
    config = toy_config(total_steps=500, eval_every=2, snapshots=True)  # snapshots at 400, 500
    source = loop.train(config, tmp_path / "source").run_dir

    def actions(name: str, reseed: int | None = None) -> np.ndarray:
        run = loop.branch(source, 400, tmp_path / name, reseed=reseed).run_dir
        return ReplayBuffer.from_journal(run / "transitions.bin", 2, 2).action

    control = actions("control")
    np.testing.assert_array_equal(actions("control-again"), control)
    replicate = actions("replicate", reseed=7)
    np.testing.assert_array_equal(replicate[:400], control[:400])
    assert not np.array_equal(replicate[400:], control[400:])
    assert json.loads((tmp_path / "replicate" / "branch.json").read_text())["reseed"] == 7


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_reseeding_replaces_every_random_stream_a_branch_uses(device, tmp_path):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    config = toy_config(total_steps=300, snapshots=True, device=device)
    source = loop.train(config, tmp_path / "source").run_dir
    snapshot = RunDir(source).load_checkpoint(at_steps=300)
    again = loop.reseeded(snapshot, 7, torch.device(device))
    assert again["numpy_rng"] != snapshot["numpy_rng"]
    assert not torch.equal(again["torch_rng"], snapshot["torch_rng"])
    planner = load_mpc_agent(source, device)[0].planner
    planner.load_state_dict(again["planner"])  # a state of the planner's own device: restored
    assert torch.equal(planner.generator.get_state(), again["planner"]["generator"])
    assert not torch.equal(again["planner"]["generator"], snapshot["planner"]["generator"])
    same = loop.reseeded(snapshot, 7, torch.device(device))
    assert same["numpy_rng"] == again["numpy_rng"]
    assert torch.equal(same["torch_rng"], again["torch_rng"])


def test_a_branch_refuses_what_its_data_and_parts_cannot_keep(tmp_path):
    config = toy_config(total_steps=400, eval_every=1, snapshots=True)
    source = loop.train(config, tmp_path / "source").run_dir
    with pytest.raises(ConfigError, match="env, seed, steps_per_iteration cannot change"):
        loop.branch(source, 300, tmp_path / "a", {"env": "X", "seed": 3, "steps_per_iteration": 5})
    with pytest.raises(ConfigError, match=r"do not fit the learned parts.*cannot resize"):
        loop.branch(source, 300, tmp_path / "b", {"dynamics.hidden_size": 16})
    with pytest.raises(ConfigError, match="must be above the branch point"):
        loop.branch(source, 400, tmp_path / "c")
    with pytest.raises(ConfigError, match="reseed must be a non-negative integer"):
        loop.branch(source, 300, tmp_path / "e", reseed=-1)
    with pytest.raises(CheckpointError, match="no snapshot at 350 env steps"):
        loop.branch(source, 350, tmp_path / "d")
    assert not any((tmp_path / name).exists() for name in "abcde")  # no half-made folder


def test_a_branch_copies_only_complete_metrics_rows_up_to_its_point(tmp_path):
    source, copy = RunDir.create(tmp_path / "source"), RunDir.create(tmp_path / "copy")
    for iteration in (1, 2, 3):
        source.append_metrics({"iteration": iteration, "env_steps": 100 * iteration})
    with open(source.metrics, "a") as f:
        f.write("4,40")  # a row its writer is still appending
    copy.copy_metrics_from(source, up_to_iteration=2)
    assert [row["iteration"] for row in copy.read_metrics()] == [1, 2]
    copy.copy_metrics_from(source, up_to_iteration=9)
    assert [row["iteration"] for row in copy.read_metrics()] == [1, 2, 3]


def test_importing_dynaplan_loads_no_plotting_ray_or_sb3():
    import subprocess
    import sys

    code = (
        "import sys, dynaplan; "
        "print(sorted(m for m in ('matplotlib', 'ray', 'stable_baselines3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
