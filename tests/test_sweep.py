import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dynaplan.cli import main
from dynaplan.config import load_preset
from dynaplan.errors import ConfigError
from dynaplan.rundir import RunDir
from dynaplan.sweep import BASE_LABEL, Sweep, load_sweep, parse_yaml
from tests.conftest import toy_config


def test_a_grid_is_every_combination_with_labelled_validated_configs():
    sweep = Sweep.from_dict({"base": "pendulum", "grid": {"horizon": [2, 5], "planner": ["cem"]}})
    variants = sweep.variants()
    assert list(variants) == ["horizon=2,planner=cem", "horizon=5,planner=cem"]
    config = variants["horizon=5,planner=cem"]
    assert (config.horizon, config.planner, config.label) == (5, "cem", "horizon=5,planner=cem")
    assert config.total_steps == load_preset("pendulum").total_steps


def test_random_draws_are_seeded_and_combined_with_the_grid():
    data = {
        "grid": {"horizon": [3, 4]},
        "random": {
            "samples": 3,
            "fields": {
                "search.lr": {"low": 0.01, "high": 1.0, "log": True},
                "dynamics.hidden_size": {"low": 16, "high": 64},
            },
        },
    }
    variants = Sweep.from_dict(data).variants()
    assert len(variants) == 6
    assert variants == Sweep.from_dict(data).variants()  # same file, same variants
    assert variants != Sweep.from_dict({**data, "random": {**data["random"], "seed": 1}}).variants()
    for config in variants.values():
        lr, hidden = config.search.lr, config.dynamics.hidden_size
        assert 0.01 <= lr <= 1.0 and float(f"{lr:.4g}") == lr  # rounded, so the label is exact
        assert isinstance(hidden, int) and 16 <= hidden <= 64
        assert f"search.lr={lr}" in config.label


def test_repeated_random_choices_are_one_variant():
    sweep = Sweep.from_dict({"random": {"samples": 20, "fields": {"planner": ["cem", "grad"]}}})
    assert sorted(sweep.variants()) == ["planner=cem", "planner=grad"]


def test_no_swept_field_is_the_base_alone():
    assert list(Sweep.from_dict({"seeds": 3}).variants()) == [BASE_LABEL]


def test_a_base_dict_may_start_from_a_preset_and_nest_sections():
    base = {"preset": "hopper", "horizon": 3, "dynamics": {"hidden_size": 8}}
    config = Sweep.from_dict({"base": base}).base
    assert (config.env, config.horizon, config.dynamics.hidden_size) == ("Hopper-v5", 3, 8)


@pytest.mark.parametrize(
    "data,message",
    [
        ({"grid": {"horizn": [1]}}, "unknown config field 'horizn'"),
        ({"grid": {"horizon": ["long"]}}, "horizon must be of type int"),
        ({"grid": {"horizon": [0]}}, "horizon must be positive"),
        ({"grid": {"horizon": 5}}, "grid.horizon must be a non-empty list"),
        ({"grids": {}}, "unknown sweep keys"),
        ({"random": {"samples": 2}}, "needs both random.fields and random.samples"),
        ({"random": {"samples": 2, "fields": {"horizon": {"low": 5, "high": 1}}}}, "low < high"),
        ({"random": {"samples": 2, "fields": {"horizon": {"lo": 1}}}}, "bad random range"),
        ({"grid": {"horizon": [1]}, "random": {"samples": 1, "fields": {"horizon": [2]}}}, "both"),
        ({"seeds": 0}, "seeds must be positive"),
        ({"base": "nope"}, "unknown preset"),
    ],
)
def test_bad_sweeps_fail_before_anything_runs(data, message):
    with pytest.raises(ConfigError, match=message):
        Sweep.from_dict(data).variants()


def test_yaml_reads_exponents_as_floats(tmp_path):
    assert parse_yaml("[1e-3, 2.5E+2, 10, cem]") == [0.001, 250.0, 10, "cem"]
    path = tmp_path / "sweep.yaml"
    path.write_text("base: pendulum\ngrid:\n  dynamics.lr: [1e-3, 3e-4]\n")
    assert load_sweep(path)["grid"]["dynamics.lr"] == [0.001, 0.0003]


def test_sweep_command_runs_skips_finished_runs_and_compares(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    base = toy_config(total_steps=300).to_dict()
    path.write_text(json.dumps({"base": base, "grid": {"search.lr": [0.1]}, "out": "unused"}))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--jobs", "1"]) == 0
    metrics = out / "runs" / "search.lr=0.1" / "seed_0" / "metrics.csv"
    before = metrics.stat().st_mtime_ns

    # started again with one more value: the finished run is skipped, the new one runs
    args = ["sweep", str(path), "--out", str(out), "--grid", "search.lr=0.1,0.2"]
    assert main(args) == 0
    assert metrics.stat().st_mtime_ns == before
    printed = capsys.readouterr().out
    assert "search.lr=0.1 " in printed and "search.lr=0.2 " in printed
    summary = (out / "compare" / "summary.csv").read_text()
    assert "search.lr=0.1" in summary and "search.lr=0.2" in summary
    assert not (tmp_path / "unused").exists()  # --out overrides the file's out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "horizon"], "--grid takes FIELD=V1,V2"),
        (["--grid", "search.lrr=0.1"], "unknown config field 'search.lrr'"),
        (["--preset", "nope"], "unknown preset"),
        (["/nonexistent/sweep.yaml"], "cannot read the sweep file"),
    ],
)
def test_bad_sweep_commands_are_one_line_errors(args, message, tmp_path, capsys):
    assert main(["sweep", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # so Python turns Ctrl-C into KeyboardInterrupt


def test_a_sweep_interrupted_with_ctrl_c_skips_finished_runs_when_started_again(tmp_path):
    path, out = tmp_path / "sweep.yaml", tmp_path / "out"
    base = toy_config(total_steps=1200).to_dict()  # 10 iterations: time to interrupt the 2nd
    path.write_text(json.dumps({"base": base, "grid": {"search.lr": [0.1, 0.2]}, "out": str(out)}))
    first, second = (RunDir(out / "runs" / f"search.lr={lr}" / "seed_0") for lr in (0.1, 0.2))
    command = [sys.executable, "-m", "dynaplan.cli", "sweep", str(path), "--jobs", "1"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    sweep = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,  # a background CI shell may have left SIGINT ignored
    )
    try:
        deadline = time.time() + 600  # generous: CI machines may be slow or shared
        while not second.metrics.exists() and time.time() < deadline and sweep.poll() is None:
            time.sleep(0.05)  # one job: the first run has finished, the second is mid-run
        assert second.metrics.exists(), "the second run never got going"
        os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        _, err = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 130 and "run the same command again" in err.decode()
    finished = first.metrics.stat().st_mtime_ns
    assert len(second.read_metrics()) < 10

    assert main(["sweep", str(path), "--jobs", "1"]) == 0
    assert first.metrics.stat().st_mtime_ns == finished  # not rerun
    assert [int(r["env_steps"]) for r in second.read_metrics()] == list(range(300, 1201, 100))
