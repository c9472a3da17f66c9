"""Milliseconds per MPC step for every planner, on Hopper-v5 dimensions.

Writes ``benchmarks/results/planning_speed.json``. Sizes: the issue's reference
ensemble (5 members, 4 hidden layers of 200, SiLU) and dynaplan's defaults.

    python benchmarks/planning_speed.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dynaplan import tasks
from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective, make_planner
from dynaplan.types import Propagation

RESULTS = Path(__file__).parent / "results" / "planning_speed.json"

CASES = {
    "grad 40x5 members, H=10, 10 steps": (
        "grad",
        10,
        dict(num_candidates=40, iterations=10),
        1,
        Propagation.EXPECTATION,
    ),
    "grad 400 candidates, H=10, 10 steps": (
        "grad",
        10,
        dict(num_candidates=400, iterations=10),
        1,
        Propagation.EXPECTATION,
    ),
    "cem PETS size: pop 500, 20 particles, H=30, 5 iters": (
        "cem",
        30,
        dict(population=500, num_elites=50, iterations=5),
        20,
        Propagation.TSINF,
    ),
    "mppi pop 500, H=30, 3 iters": (
        "mppi",
        30,
        dict(num_samples=500, iterations=3),
        1,
        Propagation.EXPECTATION,
    ),
    "shooting 1000, H=10": ("shooting", 10, dict(num_samples=1000), 1, Propagation.EXPECTATION),
    "cem-grad pop 200, H=10": (
        "cem-grad",
        10,
        dict(population=200, num_elites=20, iterations=3),
        1,
        Propagation.EXPECTATION,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    task = tasks.get("Hopper-v5")
    torch.manual_seed(0)
    model = DynamicsModel(11, 3, ensemble_size=5, hidden_size=200, num_layers=4).to(device)
    model.eval()
    start = torch.zeros(11, device=device)
    start[0] = 1.25
    rows = []
    for label, (name, horizon, options, particles, propagation) in CASES.items():
        planner = make_planner(
            name, -torch.ones(3), torch.ones(3), horizon, device=device, **options
        )
        objective = ModelObjective(
            model,
            task,
            start,
            particles=particles,
            propagation=propagation,
            generator=planner.generator,
        )
        planner.plan(objective)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(args.repeats):
            planner.plan(objective)
        if device.type == "cuda":
            torch.cuda.synchronize()
        ms = 1000 * (time.perf_counter() - began) / args.repeats
        rows.append({"case": label, "planner": name, "ms_per_step": round(ms, 2)})
        print(f"{label:<55} {ms:9.1f} ms")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "device": str(device),
                "machine": platform.processor() or platform.machine(),
                "threads": args.threads,
                "torch": torch.__version__,
                "model": "5 members, 4x200 SiLU, Hopper 11+3",
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
