"""Planning milliseconds per env step: mbrl-lib 0.2.0's PETS agent vs dynaplan's CEM, on Hopper.

    python benchmarks/mbrl_lib_speed.py [--mbrl-python /tmp/mbrl-venv/bin/python] [--steps 3]

Both sides plan for Hopper's sizes (obs 11, act 3) with an untrained probabilistic ensemble of
4 hidden layers of 200 (SiLU), CEM with horizon 30, 5 iterations, elite ratio 0.1 (35 or 50
elites), momentum 0.1, and 20 particles per sequence; each setting is timed over ``--steps``
calls after ``--warmup`` ones, on one torch thread. The settings: mbrl-lib's own PETS Hopper
defaults (7 members, population 350) and the size the speed issue quotes (5 members,
population 500). mbrl-lib runs its ``TrajectoryOptimizerAgent.act`` in its own venv
(``mbrl_lib_worker.py``, by subprocess); dynaplan runs ``CEMPlanner.plan`` on a
``ModelObjective`` here. A compute floor (the plan's ensemble forwards as bare ``baddbmm``)
is timed in the same run, to show how fast the shared CPU was; dynaplan's gradient planner at
its Hopper preset is timed for context.
Writes ``benchmarks/results/mbrl_lib_speed.json``.

mbrl-lib 0.2.0 pins old hydra-core/omegaconf/gymnasium and extras (jupyter, tensorboard) that
this benchmark does not need; its venv is made with (about a minute here)::

    python3 -m venv /tmp/mbrl-venv
    /tmp/mbrl-venv/bin/pip install torch==2.13.0  # the CPU build (here from /opt/wheels)
    /tmp/mbrl-venv/bin/pip install "numpy<2" "hydra-core>=1.3" "omegaconf>=2.3" \\
        gymnasium==0.26.3 termcolor packaging tqdm
    /tmp/mbrl-venv/bin/pip install --no-deps mbrl==0.2.0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

import dynaplan
from dynaplan import tasks
from dynaplan.agents.factory import build_model
from dynaplan.config import load_preset
from dynaplan.envs import make_env
from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective, make_planner
from dynaplan.tasks import Task
from dynaplan.types import Propagation

RESULTS = Path(__file__).parent / "results"
WORKER = Path(__file__).with_name("mbrl_lib_worker.py")
ENV_ID = "Hopper-v5"
SEED = 0


@dataclass(frozen=True)
class Setting:
    """One side-by-side case; the fields both libraries share."""

    label: str
    ensemble_size: int
    population: int
    particles: int = 20
    horizon: int = 30
    iterations: int = 5
    elite_ratio: float = 0.1
    alpha: float = 0.1

    @property
    def num_elites(self) -> int:
        """CEM elites, rounded up as mbrl-lib rounds them."""
        return math.ceil(self.population * self.elite_ratio)


SETTINGS = (
    Setting("mbrl-lib PETS Hopper defaults: 7 members, pop 350", 7, 350),
    Setting("speed issue size: 5 members, pop 500", 5, 500),
)


def timed(call: Callable[[], object], warmup: int, steps: int) -> list[float]:
    """Milliseconds of each of ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    step_ms = []
    for _ in range(steps):
        began = time.perf_counter()
        call()
        step_ms.append(1000 * (time.perf_counter() - began))
    return step_ms


def hopper() -> tuple[Task, np.ndarray, np.ndarray, np.ndarray]:
    """dynaplan's Hopper task, the action bounds and the first observation (seed 0)."""
    env = make_env(ENV_ID)
    start = env.reset(seed=SEED)[0]
    task = tasks.get(ENV_ID, env)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    return task, low, high, start


def time_dynaplan_cem(setting: Setting, warmup: int, steps: int) -> list[float]:
    """``CEMPlanner.plan`` per step with TSINF particles through a probabilistic ensemble."""
    task, low, high, start = hopper()
    torch.manual_seed(SEED)
    model = DynamicsModel(
        11,
        3,
        ensemble_size=setting.ensemble_size,
        hidden_size=200,
        num_layers=4,
        probabilistic=True,
    ).eval()
    planner = make_planner(
        "cem",
        low,
        high,
        horizon=setting.horizon,
        seed=SEED,
        population=setting.population,
        num_elites=setting.num_elites,
        iterations=setting.iterations,
        alpha=setting.alpha,
    )
    objective = ModelObjective(
        model,
        task,
        torch.as_tensor(start, dtype=torch.float32),
        particles=setting.particles,
        propagation=Propagation.TSINF,
        generator=planner.generator,
    )
    return timed(lambda: planner.plan(objective), warmup, steps)


def time_plain_forwards(setting: Setting, warmup: int, steps: int) -> list[float]:
    """A compute floor: the ensemble forwards of one plan as bare ``baddbmm`` + SiLU, per step.

    ``horizon × iterations`` forwards of ``population × particles`` rows split over the
    members, with no sampling, reward or bookkeeping: what the same CPU needs at the least.
    """
    torch.manual_seed(SEED)
    members, rows = setting.ensemble_size, setting.population * setting.particles
    sizes = [11 + 3, 200, 200, 200, 200, 2 * 11]
    weights = [torch.randn(members, i, o) / i**0.5 for i, o in itertools.pairwise(sizes)]
    biases = [torch.zeros(members, 1, o) for o in sizes[1:]]
    x = torch.randn(members, rows // members, sizes[0])

    @torch.inference_mode()
    def plan() -> None:
        for _ in range(setting.horizon * setting.iterations):
            h = x
            for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
                h = torch.baddbmm(b, h, w)
                h = torch.nn.functional.silu(h) if k < len(weights) - 1 else h

    return timed(plan, warmup, steps)


def time_dynaplan_preset(name: str, warmup: int, steps: int) -> tuple[dict[str, Any], list[float]]:
    """The planner and (untrained) model of ``dynaplan/presets/<name>.json``, per step."""
    config = load_preset(name)
    task, low, high, start = hopper()
    torch.manual_seed(SEED)
    model = build_model(config, start.shape[0], low.shape[0]).eval()
    options = config.search.options(config.planner)
    planner = make_planner(config.planner, low, high, config.horizon, seed=SEED, **options)
    objective = ModelObjective(
        model,
        task,
        torch.as_tensor(start, dtype=torch.float32),
        particles=config.search.particles,
        propagation=config.search.propagation,
        generator=planner.generator,
    )
    described = dict(
        planner=config.planner,
        model=config.model,
        hidden_size=config.dynamics.hidden_size,
        num_layers=config.dynamics.num_layers,
        horizon=config.horizon,
        particles=config.search.particles,
        propagation=str(config.search.propagation),
        **options,
    )
    return described, timed(lambda: planner.plan(objective), warmup, steps)


def time_mbrl_lib(
    python: Path, setting: Setting, start: np.ndarray, warmup: int, steps: int
) -> dict[str, Any]:
    """Run ``mbrl_lib_worker.py`` in mbrl-lib's venv; its JSON result."""
    request = dict(
        ensemble_size=setting.ensemble_size,
        population=setting.population,
        particles=setting.particles,
        horizon=setting.horizon,
        iterations=setting.iterations,
        elite_ratio=setting.elite_ratio,
        alpha=setting.alpha,
        seed=SEED,
        threads=1,
        warmup=warmup,
        steps=steps,
        start=start.tolist(),
    )
    done = subprocess.run(
        [str(python), str(WORKER), json.dumps(request)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"mbrl-lib worker failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary_ms(step_ms: list[float]) -> float:
    """The median step: robust to the spikes of a shared CPU."""
    return round(statistics.median(step_ms), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbrl-python", type=Path, default=Path("/tmp/mbrl-venv/bin/python"))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    args = parser.parse_args()
    if not args.mbrl_python.exists():
        print(f"{args.mbrl_python} not found; create mbrl-lib's venv first:\n")
        print(__doc__.split("::", 1)[1].strip("\n"))
        sys.exit(2)
    torch.set_num_threads(1)
    _, _, _, start = hopper()
    load_before = os.getloadavg()
    rows, mbrl_versions = [], {}
    for setting in SETTINGS:
        mbrl = time_mbrl_lib(args.mbrl_python, setting, start, args.warmup, args.steps)
        ours = time_dynaplan_cem(setting, args.warmup, args.steps)
        floor = time_plain_forwards(setting, args.warmup, args.steps)
        mbrl_versions = mbrl["versions"]
        row = {
            "setting": setting.label,
            "settings": {**asdict(setting), "num_elites": setting.num_elites},
            "mbrl_lib_ms": summary_ms(mbrl["step_ms"]),
            "dynaplan_ms": summary_ms(ours),
            "plain_forward_floor_ms": summary_ms(floor),
            "mbrl_lib_step_ms": [round(ms, 1) for ms in mbrl["step_ms"]],
            "dynaplan_step_ms": [round(ms, 1) for ms in ours],
            "plain_forward_floor_step_ms": [round(ms, 1) for ms in floor],
            "mbrl_lib_cem_elites": mbrl["cem_elites"],
        }
        row["ratio_mbrl_lib_over_dynaplan"] = round(row["mbrl_lib_ms"] / row["dynaplan_ms"], 2)
        rows.append(row)
    preset, grad_ms = time_dynaplan_preset("hopper", args.warmup, args.steps)
    context = {"dynaplan_hopper_preset": preset, "dynaplan_ms": summary_ms(grad_ms)}
    context["dynaplan_step_ms"] = [round(ms, 1) for ms in grad_ms]
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"arch": platform.machine(), "cores": os.cpu_count()},
        "torch_threads": 1,
        "cpu_shared": True,
        "note": (
            "The 2 cores were shared with other long jobs during the run (load average "
            f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after), so every figure "
            "is an upper bound. ms are medians of the timed steps (each one full plan: "
            "mbrl-lib agent.act, dynaplan planner.plan); both models untrained. Particles: "
            "mbrl-lib propagates TS1 ('random_model', its PETS default), dynaplan TSINF; "
            "both send every particle row through exactly one member. plain_forward_floor_ms: "
            "the same plan's ensemble forwards as bare baddbmm + SiLU, timed in the same run "
            "(the least this CPU needed for them at the time)."
        ),
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "env": ENV_ID,
        "versions": {
            "mbrl_lib_venv": mbrl_versions,
            "dynaplan_venv": {
                "dynaplan": dynaplan.__version__,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "gymnasium": gym.__version__,
                "mujoco": mujoco.__version__,
                "python": platform.python_version(),
            },
        },
        "results": rows,
        "context": context,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "mbrl_lib_speed.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'setting':<52} {'mbrl-lib ms':>12} {'dynaplan ms':>12} {'ratio':>6} {'floor ms':>9}")
    for row in rows:
        print(
            f"{row['setting']:<52} {row['mbrl_lib_ms']:>12.1f} {row['dynaplan_ms']:>12.1f} "
            f"{row['ratio_mbrl_lib_over_dynaplan']:>6.2f} {row['plain_forward_floor_ms']:>9.1f}"
        )
    grad = f"dynaplan grad, Hopper preset (H={preset['horizon']})"
    print(f"{grad:<52} {'-':>12} {context['dynaplan_ms']:>12.1f} {'-':>6} {'-':>9}")
    print(f"wrote {out} (shared CPU: figures are upper bounds)")


if __name__ == "__main__":
    main()
