"""The MuJoCo suite against the published anchors: store finished runs, report IQMs and plots.

    python benchmarks/suite.py add ~/runs/hopper-s0 --variant default   # a finished run
    python benchmarks/suite.py report                                   # table, JSON, plots

``add`` copies a finished run's ``config.json`` and ``metrics.csv`` (nothing large) to
``benchmarks/results/suite/<EnvId>/<variant>/seed_<S>/`` with ``run.json`` (the code's commit,
wall-clock seconds, env steps per second, the machine). A run that has not reached its
``total_steps`` is refused: it is not a seed.

``report`` interpolates every seed's evaluation curve at each task's budgets and gives, per
variant, the IQM over seeds with a 95% stratified-bootstrap interval (rliable's estimators:
with one task the strata are that task's seeds) for MPC (``eval_return_mean``) and for the
actor acting alone (``policy_eval_return``), beside the anchors' per-seed curves from
``benchmarks/anchors`` (DHMBPO, MBPO and SAC on Gymnasium v4) treated the same way. It writes
``summary.json``, ``table.md`` and one ``<EnvId>.png`` per task into the suite folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]
SUITE = ROOT / "benchmarks" / "results" / "suite"
ANCHORS = ROOT / "benchmarks" / "anchors" / "dhmbpo"
BUDGETS = {
    "Hopper-v5": (50_000, 100_000),
    "Walker2d-v5": (50_000, 100_000),
    "HalfCheetah-v5": (100_000,),
    "Ant-v5": (200_000,),
    "Humanoid-v5": (100_000,),
}
"""The budgets each task is reported at (those of the targets)."""
ANCHOR_METHODS = {"esvg": "DHMBPO", "mbpo": "MBPO", "sac": "SAC"}
COLUMNS = {"mpc": "eval_return_mean", "actor": "policy_eval_return"}


def _read_metrics(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [
            {k: float(v) if v not in ("", None) else math.nan for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def add(run_dir: Path, variant: str, commit: str | None, note: str = "") -> Path:
    """Copy a finished run into the suite folder; returns the seed folder."""
    config = json.loads((run_dir / "config.json").read_text())
    metrics = _read_metrics(run_dir / "metrics.csv")
    if not metrics or int(metrics[-1]["env_steps"]) < config["total_steps"]:
        reached = int(metrics[-1]["env_steps"]) if metrics else 0
        sys.exit(
            f"{run_dir} stopped at {reached} of {config['total_steps']} env steps: "
            "not a finished run, so not a seed"
        )
    env = config["env"]
    target = SUITE / env / variant / f"seed_{config['seed']}"
    if target.exists():
        sys.exit(f"{target} already holds that seed; remove it first to replace it")
    target.mkdir(parents=True)
    shutil.copy(run_dir / "config.json", target / "config.json")
    shutil.copy(run_dir / "metrics.csv", target / "metrics.csv")
    wall = metrics[-1]["wall_s"]
    commit = (
        commit
        or subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    info = {
        "commit": commit,
        "wall_s": wall,
        "env_steps_per_s": metrics[-1]["env_steps"] / wall,
        "machine": f"{platform.machine()} CPU, {config.get('threads', 1)} torch thread(s)",
        "note": note,
    }
    (target / "run.json").write_text(json.dumps(info, indent=2) + "\n")
    return target


FINAL_SEED = 12_345
"""First reset seed of the final evaluations: episodes no evaluation during training saw."""


def final(run_dir: Path, seed_dir: Path, episodes: int) -> dict:
    """Evaluate a finished run's last checkpoint on ``episodes`` fresh episodes, planning and
    with its policy alone; writes ``final_eval.json`` into its seed folder."""
    import torch

    from dynaplan.agents.factory import load_mpc_agent
    from dynaplan.envs import make_env
    from dynaplan.evaluation import evaluate
    from dynaplan.policy import PolicyAgent

    torch.set_num_threads(1)
    agent, config = load_mpc_agent(run_dir, device="cpu")
    env = make_env(config.env, **config.env_kwargs)
    result = {"episodes": episodes, "first_reset_seed": FINAL_SEED}
    agents = {"mpc": agent, "policy_alone": PolicyAgent(agent.policy)} if agent.policy else {}
    for name, acting in (agents or {"mpc": agent}).items():
        scores = evaluate(acting, env, episodes, FINAL_SEED)
        result[name] = {
            "mean": scores.mean,
            "std": scores.std,
            "returns": scores.returns,
            "lengths": scores.lengths,
        }
    env.close()
    (seed_dir / "final_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _at(steps: np.ndarray, values: np.ndarray, budget: int) -> float:
    """The curve ``values(steps)`` at ``budget``, linearly interpolated (NaN past its end)."""
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if len(steps) == 0 or budget > steps[-1] + 1e-9:
        return math.nan
    return float(np.interp(budget, steps, values))


def _interval(scores: np.ndarray, reps: int = 2000) -> tuple[float, float, float]:
    """IQM and its 95% stratified-bootstrap interval of ``scores [seeds]`` (rliable; the
    same scores give the same interval, so regenerated tables only change with the data)."""
    from rliable import library, metrics

    np.random.seed(0)  # rliable draws its bootstrap from numpy's global generator
    matrix = {"run": scores.reshape(-1, 1)}
    point, interval = library.get_interval_estimates(
        matrix, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    return float(point["run"][0]), float(interval["run"][0, 0]), float(interval["run"][1, 0])


def _seed_curves(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    curves = {}
    for seed_dir in sorted(folder.glob("seed_*")):
        rows = _read_metrics(seed_dir / "metrics.csv")
        steps = np.array([r["env_steps"] for r in rows])
        curves[seed_dir.name] = {
            "steps": steps,
            **{
                name: np.array([r.get(col, math.nan) for r in rows])
                for name, col in COLUMNS.items()
            },
        }
    return curves


def _anchor_curves(method: str, env_id: str) -> dict[str, dict[str, np.ndarray]]:
    path = ANCHORS / method / f"{env_id.split('-')[0]}.csv"
    if not path.exists():
        return {}
    by_seed: dict[str, list[tuple[float, float]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            by_seed.setdefault(row["seed"], []).append((float(row["step"]), float(row["reward"])))
    return {
        seed: {
            "steps": np.array([s for s, _ in sorted(rows)]),
            "return": np.array([r for _, r in sorted(rows)]),
        }
        for seed, rows in by_seed.items()
    }


def _summarise(curves: dict, column: str, budget: int) -> dict | None:
    scores = np.array([_at(c["steps"], c[column], budget) for c in curves.values()])
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        return None
    iqm, low, high = _interval(scores)
    return {
        "seeds": len(scores),
        "iqm": iqm,
        "ci95": [low, high],
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "scores": scores.round(1).tolist(),
    }


def report() -> dict:
    summary: dict = {}
    for env_dir in sorted(p for p in SUITE.iterdir() if p.is_dir()):
        env_id = env_dir.name
        budgets = BUDGETS.get(env_id, ())
        entry: dict = {"budgets": list(budgets), "variants": {}, "anchors": {}}
        for variant_dir in sorted(p for p in env_dir.iterdir() if p.is_dir()):
            curves = _seed_curves(variant_dir)
            runs = [json.loads((variant_dir / s / "run.json").read_text()) for s in curves]
            entry["variants"][variant_dir.name] = {
                "commits": sorted({r["commit"] for r in runs}),
                "wall_h": [round(r["wall_s"] / 3600, 2) for r in runs],
                "env_steps_per_s": [round(r["env_steps_per_s"], 1) for r in runs],
                "final": {
                    s: json.loads(path.read_text())
                    for s in curves
                    if (path := variant_dir / s / "final_eval.json").is_file()
                },
                **{f"{name}@{b}": _summarise(curves, name, b) for name in COLUMNS for b in budgets},
            }
        for method, label in ANCHOR_METHODS.items():
            curves = _anchor_curves(method, env_id)
            entry["anchors"][label] = {str(b): _summarise(curves, "return", b) for b in budgets}
        summary[env_id] = entry
        _plot(env_id, env_dir, entry)
    (SUITE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (SUITE / "table.md").write_text(table(summary))
    _write_between(ROOT / "README.md", table(summary))
    _write_between(ROOT / "docs" / "suite.md", table(summary) + "\n" + _details(summary))
    return summary


START, END = "<!-- suite:start -->", "<!-- suite:end -->"


def _write_between(path: Path, text: str) -> None:
    """Replace what lies between the suite markers of ``path`` with ``text``."""
    content = path.read_text()
    head, found, rest = content.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        sys.exit(f"{path} has no {START} ... {END} block to fill")
    path.write_text(f"{head}{START}\n{text}{END}{tail}")


def _details(summary: dict) -> str:
    """Per task: every variant's seeds, scores, commits and cost, and the plot."""
    lines = []
    for env_id, entry in summary.items():
        lines += [
            f"### {env_id}",
            "",
            f"![{env_id}](../benchmarks/results/suite/{env_id}/{env_id}.png)",
            "",
        ]
        for variant, stats in entry["variants"].items():
            cells = []
            for key, value in stats.items():
                if "@" in key and value:
                    scores = ", ".join(f"{x:,.0f}" for x in value["scores"])
                    cells.append(f"{key.replace('@', ' at ')}: {_cell(value)}; seeds {scores}")
            hours = ", ".join(f"{h:.2f}" for h in stats["wall_h"])
            rate = ", ".join(f"{r:.1f}" for r in stats["env_steps_per_s"])
            for seed, result in stats["final"].items():
                parts = [
                    f"{name.replace('_', ' ')} {score['mean']:,.0f} ± {score['std']:,.0f}"
                    for name in ("mpc", "policy_alone")
                    if (score := result.get(name))
                ]
                cells.append(f"{seed} on {result['episodes']} fresh episodes: {', '.join(parts)}")
            lines.append(
                f"- `{variant}` (commits {', '.join(c[:7] for c in stats['commits'])}; wall "
                f"{hours} h a run, {rate} env steps/s): "
                + ("; ".join(cells) or "no budget reached")
            )
        lines.append("")
    return "\n".join(lines)


def _cell(stats: dict | None) -> str:
    if not stats:
        return "–"
    if stats["seeds"] == 1:
        return f"{stats['iqm']:,.0f} (1 seed, no interval)"
    low, high = stats["ci95"]
    return f"{stats['iqm']:,.0f} [{low:,.0f}, {high:,.0f}] (n={stats['seeds']})"


def table(summary: dict) -> str:
    """A markdown table: per task and budget, each dynaplan recipe (the default first; MPC and
    its policy alone) and the anchors, each as IQM [95% CI] (seeds)."""
    lines = [
        "| task (v5), budget | dynaplan recipe | MPC | policy alone | DHMBPO (v4) | MBPO (v4) "
        "| SAC (v4) |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id, entry in summary.items():
        variants = sorted(entry["variants"], key=lambda name: (name != "default", name))
        for b in entry["budgets"]:
            anchors = [_cell(entry["anchors"][label][str(b)]) for label in ANCHOR_METHODS.values()]
            reached = [
                name
                for name in variants
                if any(entry["variants"][name].get(f"{col}@{b}") for col in COLUMNS)
            ]
            for name in reached or ["–"]:  # a variant that never reached b has no row there
                stats = entry["variants"].get(name, {})
                lines.append(
                    f"| {env_id} {b // 1000}k | {name} | {_cell(stats.get(f'mpc@{b}'))} | "
                    f"{_cell(stats.get(f'actor@{b}'))} | {' | '.join(anchors)} |"
                )
    return "\n".join(lines) + "\n"


def _plot(env_id: str, env_dir: Path, entry: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"DHMBPO": "tab:red", "MBPO": "tab:green", "SAC": "tab:gray"}
    horizon = max(entry["budgets"] or (100_000,))
    for method, label in ANCHOR_METHODS.items():
        for i, curve in enumerate(_anchor_curves(method, env_id).values()):
            keep = curve["steps"] <= horizon
            ax.plot(
                curve["steps"][keep],
                curve["return"][keep],
                color=colours[label],
                lw=0.7,
                alpha=0.5,
                label=f"{label} (v4, erl_lib)" if i == 0 else None,
            )
    palette = ["tab:blue", "tab:purple", "tab:orange", "tab:brown", "tab:cyan"]
    variant_dirs = sorted(p for p in env_dir.iterdir() if p.is_dir())
    for colour, variant_dir in zip(palette, variant_dirs, strict=False):
        for i, curve in enumerate(_seed_curves(variant_dir).values()):
            for name, style, width in (("mpc", "-", 1.6), ("actor", ":", 1.0)):
                keep = np.isfinite(curve[name])
                what = "MPC" if name == "mpc" else "policy alone"
                ax.plot(
                    curve["steps"][keep],
                    curve[name][keep],
                    style,
                    color=colour,
                    lw=width,
                    label=f"dynaplan {variant_dir.name}: {what}" if i == 0 else None,
                )
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(f"{env_id}: dynaplan seeds against the anchors' per-seed curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(env_dir / f"{env_id}.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    adding = commands.add_parser("add", help="store a finished run as a seed")
    adding.add_argument("run_dir", type=Path)
    adding.add_argument("--variant", default="default")
    adding.add_argument("--commit", default=None, help="the code's commit (default: HEAD)")
    adding.add_argument("--note", default="", help="how it ran (what else shared the CPU)")
    finals = commands.add_parser("final", help="fresh episodes of a run's last checkpoint")
    finals.add_argument("run_dir", type=Path)
    finals.add_argument("seed_dir", type=Path, help="its folder under the suite results")
    finals.add_argument("--episodes", type=int, default=10)
    commands.add_parser("report", help="summary.json, table.md and plots")
    args = parser.parse_args()
    if args.command == "add":
        print(add(args.run_dir, args.variant, args.commit, args.note))
    elif args.command == "final":
        print(json.dumps(final(args.run_dir, args.seed_dir, args.episodes)))
    else:
        print(table(report()))


if __name__ == "__main__":
    main()
