"""The paper's Fig. 1: every planner on one trained model, at matched compute.

"Matched compute" means about the same number of model rollouts of the whole horizon per
plan (a backward pass counted as two forward passes). Each planner drives the run's MPC agent
(same model, task, horizon) on the same evaluation episodes.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dynaplan.agents.factory import load_mpc_agent
from dynaplan.config import read_config_file
from dynaplan.envs import make_env
from dynaplan.evaluation import evaluate
from dynaplan.planners import make_planner

MATCHED: dict[str, dict[str, Any]] = {
    "shooting": dict(num_samples=300),
    "cem": dict(population=60, num_elites=6, iterations=5),
    "mppi": dict(num_samples=100, iterations=3, temperature=0.5),
    "grad": dict(num_candidates=20, iterations=5, lr=0.3),
    "cem-grad": dict(population=60, num_elites=6, iterations=2, grad_steps=5),
}
"""About 300 horizon rollouts per plan for each planner."""


@dataclass
class PlannerScore:
    planner: str
    options: dict[str, Any]
    return_mean: float
    return_std: float
    episode_length_mean: float
    ms_per_step: float


def compare_planners(
    run_dir: str | Path,
    episodes: int,
    seed: int,
    planners: dict[str, dict[str, Any]] = MATCHED,
) -> list[PlannerScore]:
    """Evaluate the run's MPC agent with each planner on the same ``episodes`` (CPU)."""
    agent, config = load_mpc_agent(run_dir, "cpu")
    env = make_env(config.env, **config.env_kwargs)
    scores = []
    for name, options in planners.items():
        agent.planner = make_planner(
            name, env.action_space.low, env.action_space.high, config.horizon, seed=0, **options
        )
        agent.plan_seconds, agent.plans = 0.0, 0
        result = evaluate(agent, env, episodes, seed)
        scores.append(
            PlannerScore(
                name,
                options,
                result.mean,
                result.std,
                sum(result.lengths) / len(result.lengths),
                agent.ms_per_plan,
            )
        )
    env.close()
    return scores


def write_planner_comparison(
    scores: list[PlannerScore], run_dir: str | Path, episodes: int, out: str | Path
) -> list[Path]:
    """``planner_comparison.json`` and ``.png`` (return and ms per step per planner) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = read_config_file(Path(run_dir) / "config.json")
    summary = {
        "run_dir": str(run_dir),
        "env": config["env"],
        "horizon": config["horizon"],
        "model": config["model"],
        "episodes": episodes,
        "machine": f"{platform.machine()} CPU, 1 torch thread",
        "results": [asdict(s) for s in scores],
    }
    files = [out / "planner_comparison.json", out / "planner_comparison.png"]
    files[0].write_text(json.dumps(summary, indent=2) + "\n")
    fig, (ax_return, ax_time) = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [s.planner for s in scores]
    ax_return.bar(names, [s.return_mean for s in scores], yerr=[s.return_std for s in scores])
    ax_return.set_ylabel(f"return ({episodes} episodes)")
    ax_time.bar(names, [s.ms_per_step for s in scores], color="tab:orange")
    ax_time.set_ylabel("ms per step")
    fig.suptitle(f"{config['env']}: planners on one trained model, matched compute")
    fig.tight_layout()
    fig.savefig(files[1], dpi=120)
    plt.close(fig)
    return files
