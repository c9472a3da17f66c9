import json
import subprocess
import sys
import warnings

import pytest
import torch
from tyro._docstrings import get_field_docstring

from dynaplan import loop
from dynaplan.cli import TrainCommand, main
from dynaplan.config import TrainConfig, load_preset
from dynaplan.errors import ConfigError
from tests.conftest import toy_config

TOY = ["--env", "dynaplan/PointMass-v0", "--no-progress", "--threads", "1"]
TSINF_ENSEMBLE = ["--model", "ensemble", "--search.propagation", "tsinf"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--env", "Nope-v0"], "Nope-v0"),
        (["train", *TOY, "--planner", "ilqr"], "unknown planner"),
        (["train", *TOY, "--model", "gp"], "unknown model"),
        (["train", *TOY, "--horizon", "0"], "horizon must be positive"),
        (["train", *TOY, "--total-steps", "0"], "total_steps must be positive"),
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--resume", "/nonexistent/run"], "no run folder"),
        (["evaluate", "/nonexistent/run"], "no run folder"),
        (["train", *TOY, "--search.lr", "-0.1"], "search.lr must be positive"),
        (["train", *TOY, "--value.gamma", "1.5"], "value.gamma must be in (0, 1), got 1.5"),
        (["sweep"], "nothing to sweep"),
        (["sweep", "--seeds", "0"], "seeds must be positive"),  # --seeds alone is a sweep
        # lowercase enum values, as config.json and the help text write them
        (["train", *TOY, "--search.precision", "bf16", "--horizon", "0"], "horizon must be"),
        (["train", *TOY, "--value.kind", "lqr", "--value.td-steps", "2"], "value.kind lqr"),
        (
            ["train", *TOY, *TSINF_ENSEMBLE, "--search.disagreement-penalty", "1"],
            "--search.propagation expectation",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys, tmp_path):
    if args[0] == "train" and "--resume" not in args and "--preset" not in args:
        args = [*args, "--out", str(tmp_path / "run")]
    assert main(args) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()  # nothing half-made to trip over next time


def test_an_env_without_a_task_says_how_to_register(capsys, tmp_path):
    assert main(["train", "--env", "CartPole-v1", "--out", str(tmp_path / "r")]) == 2
    assert "Discrete" in one_line_error(capsys)
    assert main(["train", "--env", "Pendulum-v1", "--out", str(tmp_path / "r2")]) == 2
    assert "dynaplan.tasks.register" in one_line_error(capsys)


def test_unknown_command(capsys):
    assert main(["fly"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_no_traceback_from_the_console_script(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dynaplan.cli", "train", "--env", "Nope-v0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


def tiny_train_args(run) -> list[str]:
    args = ["train", *TOY, "--total-steps", "300", "--random-steps", "200"]
    args += ["--steps-per-iteration", "100", "--horizon", "3", "--dynamics.hidden-size", "32"]
    return [*args, "--search.num-candidates", "4", "--search.iterations", "3", "--out", str(run)]


def test_train_then_evaluate_then_refuse_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    args = tiny_train_args(run)
    assert main(args) == 0
    assert "done: 300 env steps" in capsys.readouterr().out
    torch.set_num_threads(2)
    assert main(["evaluate", str(run), "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    assert torch.get_num_threads() == 1  # the run's threads, not the machine's default
    assert main(args) == 2
    assert "already holds a run" in one_line_error(capsys)
    assert main(["evaluate", str(run), "--episodes", "0"]) == 2
    assert "at least one episode" in one_line_error(capsys)


def test_an_out_that_is_a_file_or_a_run_that_never_trained_says_what_to_do(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert main(["train", *TOY, "--out", str(file)]) == 2
    assert "is a file, not a folder" in one_line_error(capsys)
    assert file.read_text() == "mine"
    started = tmp_path / "started"  # killed before its first model was trained
    started.mkdir()
    (started / "config.json").write_text(json.dumps(toy_config().to_dict()))
    for command in (["train", "--resume", str(started)], ["evaluate", str(started)]):
        assert main(command) == 2
        assert "delete the folder to start that run again" in one_line_error(capsys)


def test_presets_parse_without_warnings():
    """A preset's enum fields (the pendulum's value.kind) load as members, which the parser
    takes as defaults without tyro's type warning."""
    from dynaplan.config import load_preset
    from dynaplan.types import ValueKind

    assert load_preset("pendulum").value.kind is ValueKind.LQR
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["train", "--preset", "pendulum", "--horizon", "0"]) == 2


def test_a_branch_takes_the_flags_given_as_its_changes(tmp_path, capsys):
    source = tmp_path / "source"
    assert main([*tiny_train_args(source), "--snapshots"]) == 0  # snapshots at 300
    branch = ["train", "--branch-from", str(source), "--branch-at", "300", "--out"]
    refusals = [
        ([*branch, str(tmp_path / "a"), "--preset", "pendulum"], "not --resume or --preset"),
        ([*branch, str(tmp_path / "a"), "--resume", str(source)], "not --resume or --preset"),
        (["train", "--branch-from", str(source)], "--branch-from and --branch-at go together"),
        (["train", "--branch-reseed", "3"], "--branch-reseed needs --branch-from"),
    ]
    for args, message in refusals:
        assert main(args) == 2, args
        assert message in one_line_error(capsys)
    flags = [
        "--total-steps",
        "400",
        "--search.lr",
        "0.05",
        "--no-snapshots",
        "--branch-reseed",
        "3",
    ]
    assert main([*branch, str(tmp_path / "b"), *flags]) == 0
    assert "done: 400 env steps" in capsys.readouterr().out
    saved = json.loads((tmp_path / "b" / "branch.json").read_text())
    assert saved["changes"] == {"total_steps": 400, "search.lr": 0.05, "snapshots": False}
    assert saved["reseed"] == 3


def test_a_resumed_run_extends_and_refuses_other_changes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_train_args(run)) == 0
    capsys.readouterr()
    saved = (run / "config.json").read_text()
    refusals = [
        (["--search.lr", "0.5"], "--search.lr cannot change when a run resumes"),
        (["--out", str(tmp_path / "other")], "drop --out"),
        (["--total-steps", "250"], "total_steps can only extend a run"),
    ]
    if not torch.cuda.is_available():
        refusals.append((["--device", "cuda"], "CUDA is not available"))
    for flags, message in refusals:
        assert main(["train", "--resume", str(run), *flags]) == 2, flags
        assert message in one_line_error(capsys)
        assert (run / "config.json").read_text() == saved  # nothing changed by a refusal

    with pytest.raises(ConfigError, match="seed cannot change"):
        loop.resume(run, changes={"seed": 1})
    with pytest.raises(ConfigError, match="total_steps must be of type int"):
        loop.resume(run, changes={"total_steps": "400"})

    extend = ["--total-steps", "400", "--no-progress", "--snapshots"]
    assert main(["train", "--resume", str(run), *extend]) == 0
    assert "done: 400 env steps" in capsys.readouterr().out
    saved = json.loads((run / "config.json").read_text())
    assert (saved["total_steps"], saved["progress"], saved["snapshots"]) == (400, False, True)
    assert main(["evaluate", str(run), "--at-steps", "400", "--episodes", "1"]) == 0
    assert "over 1 episodes" in capsys.readouterr().out
    # the checkpoint it resumed from held the weights evaluated at 300: kept as well
    assert main(["evaluate", str(run), "--at-steps", "350"]) == 2
    assert "no snapshot at 350 env steps; it has 300, 400" in one_line_error(capsys)
    assert main(["baseline", "--resume", str(run), "--total-steps", "400"]) == 2
    assert "with --resume, no flag can" in one_line_error(capsys)


def test_presets_load_and_validate():
    from dynaplan.config import load_preset, presets

    assert "pendulum" in presets()
    for name in presets():
        load_preset(name).validate()
    assert toy_config().validate()


def test_demo_runs_the_loop_and_reports_the_steps_to_solve(monkeypatch, tmp_path, capsys):
    """The demo's code path on the toy env (the real demo takes minutes)."""
    import dynaplan.cli as cli

    monkeypatch.setattr(cli, "load_preset", lambda name: toy_config(total_steps=300))
    monkeypatch.setattr(cli, "SOLVED_RETURN", -10.0)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "solved: evaluation return -10 reached after 300 env steps" in out
    assert (tmp_path / "demo" / "learning_curve.png").is_file()


def test_help_text_joins_wrapped_docstring_lines():
    """Every long field docstring wraps over indented lines; --help shows each as one paragraph
    (tyro kept the breaks, which read as cut-off sentences in a wide terminal)."""
    resume = get_field_docstring(TrainCommand, "resume", ())
    assert "\n" not in resume and "only --total-steps (to extend it), --device" in resume
    assert "\n" not in get_field_docstring(TrainConfig, "snapshots", ())


def test_a_new_run_starts_from_its_envs_recipe_unless_told_otherwise(monkeypatch, capsys):
    """--env X alone takes X's recipe and says so; --preset none or an env without one takes
    the defaults; an explicit --preset wins."""
    started = []
    monkeypatch.setattr(loop, "train", lambda config, out: started.append(config) or _stop())

    def run(*args: str) -> TrainConfig:
        with pytest.raises(_Stop):
            main(["train", *args, "--out", "unused"])
        return started.pop()

    hopper = run("--env", "Hopper-v5")
    assert (
        "Hopper-v5: starting from its recipe, preset hopper-value-prior" in capsys.readouterr().out
    )
    assert hopper == load_preset("hopper-value-prior").with_fields({"env": "Hopper-v5"})
    assert run("--env", "Hopper-v5", "--preset", "none") == TrainConfig(env="Hopper-v5")
    assert run("--env", "Hopper-v5", "--preset", "hopper").policy.enabled is False
    assert run(*TOY) == TrainConfig(**{**TrainConfig().__dict__, "env": TOY[1], "progress": False})
    assert "recipe" not in capsys.readouterr().out


class _Stop(Exception):
    pass


def _stop():
    raise _Stop


def test_a_corrupt_or_missing_file_of_a_run_folder_is_one_line_and_nothing_changes(
    tmp_path, capsys
):
    run = tmp_path / "run"
    assert main(tiny_train_args(run)) == 0
    capsys.readouterr()
    config, metrics = run / "config.json", run / "metrics.csv"
    good_config, good_metrics = config.read_text(), metrics.read_text()

    config.write_text(good_config[:-20])
    for command in (["train", "--resume", str(run)], ["evaluate", str(run)]):
        assert main(command) == 2
        assert "config.json is not valid JSON" in one_line_error(capsys)
    config.write_text(good_config)

    metrics.write_text(good_metrics.replace("\n1,", "\nbanana,", 1))
    assert main(["train", "--resume", str(run), "--total-steps", "400"]) == 2
    assert "is not a dynaplan metrics table" in one_line_error(capsys)
    assert main(["compare", str(run), "--out", str(tmp_path / "cmp")]) == 2
    assert "is not a dynaplan metrics table" in one_line_error(capsys)
    assert "banana" in metrics.read_text()  # refused, not rewritten

    metrics.unlink()
    assert main(["train", "--resume", str(run), "--total-steps", "400"]) == 2
    assert "metrics.csv is missing" in one_line_error(capsys)
    assert config.read_text() == good_config


def test_a_preset_is_a_shipped_name_or_a_path(tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"preset": "pendulum", "horizon": 4}))
    started = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "train", lambda config, out: started.append(config) or _stop())
        with pytest.raises(_Stop):
            main(["train", "--preset", str(mine), "--out", "unused"])
    assert started[0] == load_preset("pendulum").with_fields({"horizon": 4})
    (tmp_path / "broken.json").write_text("{")
    assert main(["train", "--preset", str(tmp_path / "broken.json")]) == 2
    assert "broken.json is not valid JSON" in one_line_error(capsys)
    assert main(["train", "--preset", "nope"]) == 2
    assert "give a path to a .json file" in one_line_error(capsys)
