"""Multi-seed MBRL runs from a preset, in parallel processes; JSON + PNG into results/.

    python benchmarks/mbrl_runs.py pendulum --seeds 10 --jobs 2 --threshold 1000
    python benchmarks/mbrl_runs.py hopper --seeds 3 --jobs 2

Each seed is a normal run folder under ``runs/benchmarks/<name>/seed_<s>`` (an existing one
is resumed, so a killed benchmark continues). Writes ``benchmarks/results/<name>.json``
(per seed: learning curve, steps to the threshold, wall time) and ``<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

RESULTS = Path(__file__).parent / "results"


def run_seed(preset: str, seed: int, folder: str, threshold: float | None) -> dict:
    from dynaplan import loop
    from dynaplan.config import load_preset
    from dynaplan.rundir import RunDir

    run_dir = Path(folder) / f"seed_{seed}"
    run = RunDir(run_dir)
    rows = run.read_metrics()
    finished = rows and (
        rows[-1]["env_steps"] >= load_preset(preset).total_steps
        or (threshold is not None and rows[-1]["eval_return_mean"] >= threshold)
    )
    if finished:
        result = loop.RunResult(run_dir, rows)
    elif run.checkpoint.exists():
        result = loop.resume(run_dir)
    else:
        config = load_preset(preset)
        config.seed, config.progress, config.stop_at_return = seed, False, threshold
        result = loop.train(config, run_dir)
    rows = result.metrics
    return {
        "seed": seed,
        "run_dir": str(run_dir),
        "env_steps": [int(r["env_steps"]) for r in rows],
        "eval_return_mean": [r["eval_return_mean"] for r in rows],
        "plan_ms_per_step": float(np.mean([r["plan_ms_per_step"] for r in rows])),
        "wall_s": rows[-1]["wall_s"] if rows else None,
        "steps_to_threshold": None if threshold is None else result.steps_to_reach(threshold),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--name", default=None, help="results name (default: the preset)")
    args = parser.parse_args()
    name = args.name or args.preset
    folder = Path("runs/benchmarks") / name
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(run_seed, args.preset, seed, str(folder), args.threshold)
            for seed in range(args.seeds)
        ]
        seeds = [f.result() for f in futures]
    from dynaplan.config import load_preset

    summary: dict = {
        "preset": args.preset,
        "config": load_preset(args.preset).to_dict(),
        "machine": f"{platform.machine()} CPU, {args.jobs} parallel runs, 1 torch thread each",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "threshold": args.threshold,
        "seeds": seeds,
    }
    if args.threshold is not None:
        steps = [s["steps_to_threshold"] for s in seeds if s["steps_to_threshold"] is not None]
        summary["reached"] = f"{len(steps)}/{len(seeds)}"
        summary["steps_to_threshold_median"] = float(np.median(steps)) if steps else None
    finals = [s["eval_return_mean"][-1] for s in seeds if s["eval_return_mean"]]
    summary["final_return_mean"] = float(np.mean(finals))
    summary["final_return_std"] = float(np.std(finals))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in seeds:
        ax.plot(
            s["env_steps"], s["eval_return_mean"], marker=".", alpha=0.7, label=f"seed {s['seed']}"
        )
    if args.threshold is not None:
        ax.axhline(args.threshold, color="k", linestyle=":", linewidth=1)
    ax.set_xlabel("env steps (random seed data included)")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{summary['config']['env']}: {args.preset} preset, {len(seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=120)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("seeds", "config")}, indent=2))


if __name__ == "__main__":
    main()
