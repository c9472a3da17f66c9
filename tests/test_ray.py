"""A sweep on a real local Ray instance survives a worker killed mid-run."""

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
from dynaplan.rundir import RunDir
from tests.conftest import toy_config

ray = pytest.importorskip("ray")

TOTAL_STEPS = 600
RUNS = [f"search.lr={lr}/seed_{seed}" for lr in (0.1, 0.2) for seed in (0, 1)]


@pytest.fixture
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
    deadline = time.time() + 300
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
        output, _ = driver.communicate(timeout=300)
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
