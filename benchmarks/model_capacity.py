"""Is a run's model error reducible? Refit models of other sizes on the run's own data.

Issue 7 asks what limits Ant: model error, the planner or the value. This benchmark takes
the transitions a run collected (its journal), refits fresh dynamics models of several
capacities on them with one update budget, and measures each, next to the run's own
in-loop model, on fresh episodes acted by the run's MPC agent (which none of the models
saw): mean absolute one-step and open-loop H-step error, over all dimensions and the
task's named features. If a larger model or an ensemble cuts the error well below the
in-loop model's, the preset's model is the bottleneck to change; if all stay close, the
error is in the data (contacts, partial observability), not in the capacity.

    .venv/bin/python benchmarks/model_capacity.py runs/long/ant-h30-1step-seed0 --name ant-200k
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from dynaplan.agents.factory import build_dynamics, load_mpc_agent
from dynaplan.analysis import model_error
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import ModelConfig
from dynaplan.envs import make_env
from dynaplan.models import DynamicsModel, ModelTrainer

OUT = Path(__file__).parent / "results" / "model_capacity"


@dataclass(frozen=True)
class Variant:
    """One refit: the model kind (``mlp``, ``ensemble``, ``pets``), its size and its data."""

    label: str
    kind: str
    hidden_size: int
    num_layers: int
    ensemble_size: int = 1
    last_transitions: int | None = None
    """Train on the run's most recent transitions only (None: all of them)."""


VARIANTS = (
    Variant("mlp 200x3 (the preset's, refit)", "mlp", 200, 3),
    Variant("mlp 200x3, last 50k only", "mlp", 200, 3, last_transitions=50_000),
    Variant("mlp 512x4", "mlp", 512, 4),
    Variant("ensemble 5 x 200x3", "ensemble", 200, 3, ensemble_size=5),
    Variant("pets 5 x 200x4", "pets", 200, 4, ensemble_size=5),
)


def errors_on(
    model: DynamicsModel, episodes: list[model_error.Episode], horizons: list[int], dims: dict
) -> dict[str, dict[str, float]]:
    """Mean absolute error ``{feature: {H: e}}`` pooled over every (episode, t >= H)."""
    pooled: dict[int, list[np.ndarray]] = {h: [] for h in horizons}
    for ep in episodes:
        for h, err in model_error.horizon_errors(model, ep.states, ep.actions, horizons).items():
            pooled[h].append(err[h:])
    stacked = {h: np.concatenate(rows) for h, rows in pooled.items()}
    result = {"all dims": {str(h): float(stacked[h].mean()) for h in horizons}}
    for name, i in dims.items():
        result[name] = {str(h): float(stacked[h][:, i].mean()) for h in horizons}
    return result


def print_row(label: str, errors: dict[str, dict[str, float]], suffix: str) -> None:
    row = "  ".join(f"H={h}: {e:.4f}" for h, e in errors["all dims"].items())
    print(f"{label:<40} {row}  {suffix}", flush=True)


def plot(results: dict, horizons: list[int], path: Path, title: str) -> None:
    labels = list(results)
    fig, axes = plt.subplots(1, len(horizons), figsize=(4.2 * len(horizons), 4.2))
    for ax, h in zip(np.atleast_1d(axes), horizons, strict=True):
        values = [results[label]["errors"]["all dims"][str(h)] for label in labels]
        ax.barh(range(len(labels)), values, color="tab:blue")
        ax.set_yticks(range(len(labels)), labels if ax is np.atleast_1d(axes)[0] else [])
        ax.invert_yaxis()
        ax.set_title(f"{h}-step open loop")
        ax.set_xlabel("mean abs error, all dims")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--name", required=True, help="results folder under model_capacity/")
    parser.add_argument("--updates", type=int, default=20_000, help="update budget per refit")
    parser.add_argument("--episodes", type=int, default=2, help="fresh MPC test episodes")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--variants", nargs="+", help="labels of VARIANTS to refit (default all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = [v for v in VARIANTS if args.variants is None or v.label in args.variants]
    if not chosen:
        parser.error(f"no variant matches {args.variants}; known: {[v.label for v in VARIANTS]}")
    out = args.out / args.name
    out.mkdir(parents=True, exist_ok=True)

    in_loop, config, run = model_error.load_run_model(args.run_dir)
    buffer = ReplayBuffer.from_journal(run.journal, in_loop.obs_dim, in_loop.act_dim)
    agent, _ = load_mpc_agent(args.run_dir, device="cpu")
    env = make_env(config.env, **config.env_kwargs)
    started = time.perf_counter()
    episodes = []
    for k in range(args.episodes):
        agent.reset()
        seed = 12345 + k
        episodes.append(model_error.collect_episode(env, agent.act, seed, f"fresh MPC, {seed}"))
    collect_s = time.perf_counter() - started
    env.close()
    dims = model_error.default_features(config.env, in_loop.obs_dim, config.env_kwargs)
    print(f"{len(buffer)} transitions; test episodes {[len(ep) for ep in episodes]}")

    in_loop_label = "in-loop model (trained across the run)"
    results = {
        in_loop_label: {
            "errors": errors_on(in_loop, episodes, args.horizons, dims),
            "kind": config.model,
            "hidden_size": config.dynamics.hidden_size,
            "num_layers": config.dynamics.num_layers,
        }
    }
    print_row(in_loop_label, results[in_loop_label]["errors"], "")
    for variant in chosen:
        torch.manual_seed(0)
        sizes = ModelConfig(
            ensemble_size=variant.ensemble_size,
            hidden_size=variant.hidden_size,
            num_layers=variant.num_layers,
        )
        model = build_dynamics(variant.kind, sizes, in_loop.obs_dim, in_loop.act_dim)
        data = buffer if variant.last_transitions is None else buffer.last(variant.last_transitions)
        started = time.perf_counter()
        fit = ModelTrainer(model).fit(
            data, np.random.default_rng(0), max_epochs=1000, max_updates=args.updates
        )
        train_s = time.perf_counter() - started
        errors = errors_on(model, episodes, args.horizons, dims)
        results[variant.label] = {
            **asdict(variant),
            "transitions": len(data),
            "fit": {"epochs": fit.epochs, "train_loss": fit.train_loss, "val_loss": fit.val_loss},
            "train_s": round(train_s, 1),
            "errors": errors,
        }
        print_row(variant.label, errors, f"({fit.epochs} epochs, {train_s:.0f} s)")

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "run": str(args.run_dir),
        "env": config.env,
        "run_transitions": len(buffer),
        "test_episodes": [ep.label for ep in episodes],
        "test_episode_lengths": [len(ep) for ep in episodes],
        "collect_s": round(collect_s, 1),
        "updates_per_refit": args.updates,
        "horizons": args.horizons,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU",
        "commit": commit,
        "results": results,
    }
    (out / "model_capacity.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.horizons, out / "model_capacity.png", f"{config.env}: {args.run_dir.name}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
