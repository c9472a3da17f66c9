"""The paper's Fig. 1: every planner on one trained model, at matched compute.

    python benchmarks/planner_comparison.py runs/benchmarks/hopper/seed_0 --episodes 5

"Matched compute" means about the same number of model rollouts of the whole horizon per
plan (a backward pass counted as two forward passes). Writes
``benchmarks/results/planner_comparison.json`` and ``.png``: mean return over the
episodes and ms per step, measured on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from dynaplan.agents.factory import load_mpc_agent
from dynaplan.envs import make_env
from dynaplan.evaluation import evaluate
from dynaplan.planners import make_planner

RESULTS = Path(__file__).parent / "results"

# about 300 horizon rollouts per plan each
MATCHED = {
    "shooting": dict(num_samples=300),
    "cem": dict(population=60, num_elites=6, iterations=5),
    "mppi": dict(num_samples=100, iterations=3, temperature=0.5),
    "grad": dict(num_candidates=20, iterations=5, lr=0.3),
    "cem-grad": dict(population=60, num_elites=6, iterations=2, grad_steps=5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent, config = load_mpc_agent(args.run_dir, "cpu")
    env = make_env(config.env, **config.env_kwargs)
    rows = []
    for name, options in MATCHED.items():
        agent.planner = make_planner(
            name, env.action_space.low, env.action_space.high, config.horizon, seed=0, **options
        )
        agent.plan_seconds, agent.plans = 0.0, 0
        result = evaluate(agent, env, args.episodes, args.seed)
        rows.append(
            {
                "planner": name,
                "options": options,
                "return_mean": result.mean,
                "return_std": result.std,
                "episode_length_mean": sum(result.lengths) / len(result.lengths),
                "ms_per_step": agent.ms_per_plan,
            }
        )
        print(
            f"{name:<9} return {result.mean:8.1f} ± {result.std:6.1f}   "
            f"{agent.ms_per_plan:6.1f} ms/step"
        )
    RESULTS.mkdir(exist_ok=True)
    summary = {
        "run_dir": str(args.run_dir),
        "env": config.env,
        "horizon": config.horizon,
        "model": config.model,
        "episodes": args.episodes,
        "machine": f"{platform.machine()} CPU, 1 torch thread",
        "results": rows,
    }
    (RESULTS / "planner_comparison.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, (ax_return, ax_time) = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r["planner"] for r in rows]
    ax_return.bar(names, [r["return_mean"] for r in rows], yerr=[r["return_std"] for r in rows])
    ax_return.set_ylabel(f"return ({args.episodes} episodes)")
    ax_time.bar(names, [r["ms_per_step"] for r in rows], color="tab:orange")
    ax_time.set_ylabel("ms per step")
    fig.suptitle(f"{config.env}: planners on one trained model, matched compute")
    fig.tight_layout()
    fig.savefig(RESULTS / "planner_comparison.png", dpi=120)


if __name__ == "__main__":
    main()
