"""Env steps per second of the whole MBRL loop (planning + model training + env) per preset.

    python benchmarks/loop_speed.py [--presets pendulum hopper] [--iterations 2] [--compile]
        [--value-policy] [--device cuda]

Runs each preset's ``dynaplan train`` for its random steps plus ``--iterations``
iterations in a temporary folder and reads the run's own timings: ``wall_s`` minus the
evaluation episodes' ``eval_s`` (evaluation is not part of learning), split into model
fitting (``model_fit_s``), planning (``plan_ms_per_step``) and the rest (env stepping,
journaling, checkpoints). ``steady_env_steps_per_s`` is the rate of a long run, where every
step is an MPC step: its plan and its share of one model fit per iteration (both as in the last
iteration: the first one carries a compiled rollout's one-off compilation), and the rest.
``--value-policy`` switches on the learned terminal value and the policy prior (their
training counts as model fitting).
On CUDA the planner captures each plan as a CUDA graph (``PlannerConfig.cuda_graph``) and
the model trains on the GPU. Writes ``benchmarks/results/loop_speed[_cuda].json``, keeping the
rows of other settings (preset, compiled or not) measured earlier on the same kind of
machine and device with the same torch; each row records the 1-minute load average at its start.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from dynaplan.config import load_preset
from dynaplan.loop import train

RESULTS = Path(__file__).parent / "results"
TARGETS = {"pendulum": 200.0, "hopper": 20.0}
"""The speed issue's targets in env steps per second on a 2-core CPU."""


def measure(
    preset: str, iterations: int, compiled: bool, device: str, value_policy: bool = False
) -> dict:
    config = load_preset(preset)
    if value_policy:
        config.value = dataclasses.replace(config.value, enabled=True)
        config.policy = dataclasses.replace(config.policy, enabled=True)
    config.total_steps = config.random_steps + iterations * config.steps_per_iteration
    config.eval_episodes, config.progress, config.device = 1, False, device
    config.stop_at_return = None
    config.search = dataclasses.replace(config.search, compile=compiled)
    with tempfile.TemporaryDirectory() as folder:
        rows = train(config, Path(folder) / "run").metrics
    wall = rows[-1]["wall_s"] - sum(r["eval_s"] for r in rows)
    fit = sum(r["model_fit_s"] for r in rows)
    mpc_steps = config.total_steps - config.random_steps
    plan = sum(r["plan_ms_per_step"] for r in rows) / len(rows) * mpc_steps / 1000
    other = wall - fit - plan
    # a long run's rate: every env step is an MPC step, paying its plan, its share of one
    # model fit per iteration (both as in the last iteration) and the env/journal/checkpoint
    # overhead
    per_step = (
        rows[-1]["plan_ms_per_step"] / 1000
        + rows[-1]["model_fit_s"] / config.steps_per_iteration
        + other / config.total_steps
    )
    return {
        "preset": preset + (" + value + policy" if value_policy else ""),
        "env": config.env,
        "env_steps": config.total_steps,
        "env_steps_per_s": config.total_steps / wall,
        "steady_env_steps_per_s": 1 / per_step,
        "seconds": {
            "total": wall,
            "model_fit": fit,
            "planning": plan,
            "other": other,  # env steps, journal, checkpoints, plots
        },
        "plan_ms_per_step": plan * 1000 / mpc_steps,
        "last_plan_ms_per_step": rows[-1]["plan_ms_per_step"],
        "target_env_steps_per_s": TARGETS.get(preset),
        "compiled": compiled,
        "device": device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["pendulum", "hopper"])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="plan with the compiled rollout, as the Hopper and Ant presets do (otherwise every "
        "preset plans eagerly); the one-off compile counts in the short run's rate only",
    )
    parser.add_argument(
        "--value-policy",
        action="store_true",
        help="switch on the learned terminal value and the policy prior in every preset",
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for preset in args.presets:
        load = os.getloadavg()[0]  # other work on the machine slows every figure below
        row = measure(preset, args.iterations, args.compile, args.device, args.value_policy)
        row["load_average_before"] = round(load, 2)
        results.append(row)
        print(
            f"{row['preset']:<9} {row['steady_env_steps_per_s']:7.1f} env steps/s in a long run "
            f"({row['env_steps_per_s']:.1f} over this short one, random steps included) "
            f"(target {row['target_env_steps_per_s']}); "
            f"plan {row['plan_ms_per_step']:.1f} ms/step, "
            f"model fitting {row['seconds']['model_fit']:.0f} s of {row['seconds']['total']:.0f} s"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    cuda = args.device == "cuda"
    out = RESULTS / f"loop_speed{'_cuda' if cuda else ''}.json"
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, 1 torch thread",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
    }
    # rows of other settings measured earlier on the same kind of machine, device and torch
    # stay; reruns replace theirs; rows measured on another kind go
    earlier = json.loads(out.read_text()) if out.exists() else {}
    same_machine = all(earlier.get(key) == summary[key] for key in ("machine", "device", "torch"))
    measured = {(row["preset"], row["compiled"]) for row in results}
    summary["results"] = [
        row
        for row in (earlier.get("results", []) if same_machine else [])
        if (row["preset"], row["compiled"]) not in measured
    ] + results
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
