"""The paper's Fig. 1: every planner on one trained model, at matched compute.

    python benchmarks/planner_comparison.py runs/benchmarks/hopper/seed_0 --episodes 5

Writes ``benchmarks/results/planner_comparison.json`` and ``.png`` (mean return over the
episodes and ms per step, measured on this machine). ``dynaplan experiment planners`` does
the same after training its own expert.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dynaplan.analysis.planners import compare_planners, write_planner_comparison

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scores = compare_planners(args.run_dir, args.episodes, args.seed)
    for s in scores:
        print(
            f"{s.planner:<9} return {s.return_mean:8.1f} ± {s.return_std:6.1f}   "
            f"{s.ms_per_step:6.1f} ms/step"
        )
    write_planner_comparison(scores, args.run_dir, args.episodes, RESULTS)


if __name__ == "__main__":
    main()
