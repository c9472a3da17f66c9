"""Sweeps on a real local Ray instance: a worker killed mid-run, and ASHA's early stopping.

The tests of this module share one Ray instance per pytest(-xdist) worker. Nothing here
depends on timing: a worker is killed once its run has collected a given number of
transitions, and ASHA's decisions follow from the order that 2 CPUs impose on the runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dynaplan.analysis.compare import compare
from dynaplan.buffer import ReplayBuffer
from dynaplan.cli import main
from dynaplan.config import PlannerConfig
from dynaplan.rundir import RunDir
from tests.conftest import toy_config

ray = pytest.importorskip("ray")
pytest.importorskip("ray.tune")

TOTAL_STEPS = 600
RUNS = [f"search.lr={lr}/seed_{seed}" for lr in (0.1, 0.2) for seed in (0, 1)]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs, shut down (workers included) after the test."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["address"]
    ray.shutdown()


def transitions(run: Path) -> ReplayBuffer:
    return ReplayBuffer.from_journal(RunDir(run).journal, 2, 2)


def pid_writing(path: Path) -> int | None:
    """The process that holds ``path`` open (the worker running that run), via /proc."""
    target = str(path.resolve())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in fds):
                return int(pid)
        except OSError:  # the process ended or is not ours
            continue
    return None


def kill_one_worker_mid_run(runs: list[Path], driver: subprocess.Popen) -> tuple[Path, int]:
    """SIGKILL the worker of the first run seen collecting MPC data after its first model."""
    deadline = time.time() + 600  # generous: CI machines may be slow or shared
    while time.time() < deadline and driver.poll() is None:
        for run in runs:
            journal = RunDir(run).journal
            if journal.exists() and 300 <= len(transitions(run)) <= TOTAL_STEPS - 100:
                before = len(transitions(run))
                pid = pid_writing(journal)
                if pid is not None:
                    os.kill(pid, signal.SIGKILL)
                    return run, before
        time.sleep(0.05)
    output = driver.communicate()[0].decode() if driver.poll() is not None else ""
    pytest.fail(f"no run was seen mid-run; the sweep printed:\n{output}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the worker through /proc")
def test_a_sweep_on_ray_survives_a_killed_worker(ray_address, tmp_path):
    base = toy_config(total_steps=TOTAL_STEPS).to_dict()
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"base": base, "grid": {"search.lr": [0.1, 0.2]}, "seeds": 2}))
    out = tmp_path / "out"
    runs = [out / "runs" / name for name in RUNS]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "dynaplan.cli", "sweep", str(sweep), "--out", str(out)]
    command += ["--backend", "ray", "--address", ray_address]
    driver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        killed, seen = kill_one_worker_mid_run(runs, driver)
        prefix = transitions(killed)  # at least `seen` transitions the killed worker wrote
        output, _ = driver.communicate(timeout=600)
    finally:
        driver.kill()  # a no-op once it has ended
    assert driver.returncode == 0, output.decode()

    for run in runs:
        buffer = transitions(run)
        assert len(buffer) == TOTAL_STEPS  # no transition lost, none twice
        rows = RunDir(run).read_metrics()
        assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
        assert [int(r["env_steps"]) for r in rows] == [300, 400, 500, 600]
    after = transitions(killed)
    assert len(prefix) >= seen
    np.testing.assert_array_equal(after.obs[: len(prefix)], prefix.obs)  # resumed, not restarted
    np.testing.assert_array_equal(after.action[: len(prefix)], prefix.action)

    result = compare([str(out / "runs" / "*" / "seed_*")], tmp_path / "compare")
    assert {s.label: len(s.runs) for s in result.summaries} == {
        "search.lr=0.1": 2,
        "search.lr=0.2": 2,
    }


def test_asha_stops_the_runs_that_trail_and_compare_reads_them(ray_address, tmp_path):
    # one shooting sample per step is a random policy (return -38 ± 14 per episode, so about
    # -38 ± 6 over 5; grad MPC about -5)
    search = PlannerConfig(num_candidates=4, num_samples=1)
    base = toy_config(total_steps=500, eval_episodes=5, search=search)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        json.dumps({"base": base.to_dict(), "grid": {"planner": ["grad", "shooting"]}, "seeds": 2})
    )
    out = tmp_path / "out"
    args = ["sweep", str(sweep), "--out", str(out), "--backend", "ray", "--scheduler", "asha"]
    assert main(args) == 0  # uses this process's Ray connection (2 CPUs: 2 runs at a time)

    def iterations(planner: str) -> list[int]:
        return [
            len(RunDir(run).read_metrics()) for run in (out / "runs").glob(f"*{planner}/seed_*")
        ]

    # ASHA's rungs are at iterations 1, 4, ...; the first run at a rung goes on, the others
    # only within the top quarter of the runs before them. The grad runs start first, so one
    # finishes; the shooting runs start once a grad run has reported, and trail it at rung 1.
    assert max(iterations("grad")) == 3
    assert iterations("shooting") == [1, 1]
    result = compare([str(out / "runs" / "*" / "seed_*")], tmp_path / "compare")
    assert {s.label: len(s.runs) for s in result.summaries} == {
        "planner=grad": 2,
        "planner=shooting": 2,
    }


@pytest.mark.parametrize("scheduler", ["none", "asha"])
def test_a_run_that_fails_on_a_worker_is_a_one_line_error(scheduler, ray_address, tmp_path, capsys):
    run = tmp_path / "out" / "runs" / "base" / "seed_0"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"horizn": 3}')  # resumed, it fails on the worker
    (run / "checkpoint.pt").write_bytes(b"")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(json.dumps({"base": toy_config().to_dict()}))
    args = ["sweep", str(sweep), "--out", str(tmp_path / "out"), "--backend", "ray"]
    assert main([*args, "--scheduler", scheduler, "--max-retries", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad configuration") and "horizn" in err and "\n" not in err
