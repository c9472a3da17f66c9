"""How an Ant run's episodes end: jumping out of the healthy z range or turning over for good.

Reads the transitions a run collected (its journal) and reports, per window of env steps, the
share of steps the torso spent upside down (``AntTask.upright < 0``), how many episodes
turned over, and how many ended by leaving the healthy z range (the env's only termination).
An ant on its back stays inside the z range, so the env plays on to the time limit while it
can never walk again. It also asks whether the run's final model sees each failure coming: the
share of the turn-overs (and of the jumps out) in the run's second half that the model, rolled
out open loop with the recorded actions from H steps before, predicts (upright < 0, or z above
the healthy range, at that step), and for jumps out the quartiles of the predicted z. Those
transitions were in its training data, so this is an upper bound on what a planner over H
steps can see: a failure the model sees coming and the planner still walks into points at the
objective (value, prior), not at the model.

    .venv/bin/python benchmarks/ant_failures.py runs/long/ant-h30-1step-seed0 --name ant-200k
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from run_analysis import run_parser, save_figure

from dynaplan import tasks
from dynaplan.analysis import model_error
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.models import DynamicsModel
from dynaplan.rundir import RunDir
from dynaplan.tasks.mujoco import AntTask

OUT = Path(__file__).parent / "results" / "ant_failures"


def turn_overs(upright: np.ndarray, next_upright: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the transitions that turn the torso upside down (``upright [N]`` and
    ``next_upright [N]``: each row's ``obs`` and ``next_obs`` upright value). Counted on the
    transition, so an episode cut at the turn-over (``reset_below_upright``) counts too."""
    return (upright >= 0) & (next_upright < 0)


def predicted_before(
    model: DynamicsModel, buffer: ReplayBuffer, rows: np.ndarray, horizon: int
) -> np.ndarray:
    """``[M, S]``: the model's prediction of each event row's ``next_obs`` from ``horizon``
    steps before, open loop with the recorded actions (M: the rows with that much of their
    episode before them)."""
    predictions = []
    for row in rows:
        start = row + 1 - horizon  # the rollout's last step predicts the row's next_obs
        if start < 0 or buffer.episode[start] != buffer.episode[row]:
            continue
        pred = model_error.open_loop_predictions(model, buffer.obs, buffer.action, start, horizon)
        predictions.append(pred[-1])
    return np.array(predictions).reshape(len(predictions), buffer.obs.shape[1])


def jumped_out(buffer: ReplayBuffer, z_high: float) -> np.ndarray:
    """``[N]`` bool: the transitions the env ended because the torso rose above ``z_high``."""
    return buffer.terminated & (buffer.next_obs[:, 0] > z_high)


def failures(
    buffer: ReplayBuffer, upright: np.ndarray, next_upright: np.ndarray, z_high: float, window: int
) -> list[dict]:
    """Per window of ``window`` env steps: upside-down share, turn-overs, jumps out, episodes.

    Turn-overs are also given per 1,000 upright steps: an ant on its back rarely rights itself
    to turn over again before its episode ends, so runs that spend long on their backs (or
    that cut their episodes at a turn-over) are only comparable by this rate, not the count."""
    same_episode = np.r_[False, buffer.episode[1:] == buffer.episode[:-1]]
    turned_over = turn_overs(upright, next_upright)
    jumps = jumped_out(buffer, z_high)
    rows = []
    for start in range(0, len(buffer), window):
        part = slice(start, min(start + window, len(buffer)))
        upright_steps = int((upright[part] >= 0).sum())
        rows.append(
            {
                "env_steps": [start, part.stop],
                "upside_down_share": float(np.mean(upright[part] < 0)),
                "turn_overs": int(turned_over[part].sum()),
                "turn_overs_per_1k_upright_steps": (
                    1000 * float(turned_over[part].sum()) / upright_steps if upright_steps else None
                ),
                "jumps_out": int(jumps[part].sum()),
                "other_terminations": int((buffer.terminated[part] & ~jumps[part]).sum()),
                "episodes_started": int((~same_episode[part]).sum()),
            }
        )
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    mid = [sum(r["env_steps"]) / 2000 for r in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    top.plot(mid, [r["upside_down_share"] for r in rows], marker="o")
    top.set_ylabel("share of steps\nupside down")
    top.set_ylim(0, 1)
    bottom.plot(mid, [r["jumps_out"] for r in rows], marker="o", label="jumped out (z > max)")
    bottom.plot(mid, [r["turn_overs"] for r in rows], marker="s", label="turned over")
    bottom.set_ylabel("episodes per window")
    bottom.set_xlabel("env steps (thousands)")
    bottom.legend()
    top.set_title(title)
    save_figure(fig, path)


def main() -> None:
    parser = run_parser(__doc__, OUT)
    parser.add_argument("--window", type=int, default=10_000, help="env steps per row")
    parser.add_argument("--horizons", type=int, nargs="+", default=[1, 3, 5, 10])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    run = RunDir.open(args.run_dir)
    config = TrainConfig.load(run.config)
    env = make_env(config.env, **config.env_kwargs)
    task = tasks.get(config.env, env)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    if not isinstance(task, AntTask):
        parser.error(f"{config.env} has no free torso to turn over; this is for Ant runs")
    buffer = ReplayBuffer.from_journal(run.journal, obs_dim, act_dim)
    upright = task.upright(torch.from_numpy(buffer.obs)).numpy()
    next_upright = task.upright(torch.from_numpy(buffer.next_obs)).numpy()
    rows = failures(buffer, upright, next_upright, task.healthy_z_range[1], args.window)
    model, _, _ = model_error.load_run_model(args.run_dir)
    z_high = task.healthy_z_range[1]
    second_half = np.arange(len(buffer)) >= len(buffer) // 2
    events = {
        "turn_overs": (
            turn_overs(upright, next_upright) & second_half,
            lambda obs: bool(task.upright(torch.from_numpy(obs)) < 0),
        ),
        "jumps_out": (
            jumped_out(buffer, z_high) & second_half,
            lambda obs: bool(obs[0] > z_high),
        ),
    }
    foresight = {name: {} for name in events}
    for name, (happened, happens) in events.items():
        for horizon in args.horizons:
            predicted = predicted_before(model, buffer, np.flatnonzero(happened), horizon)
            seen = sum(happens(obs) for obs in predicted)
            foresight[name][str(horizon)] = {"seen": seen, name: len(predicted)}
            if name == "jumps_out" and len(predicted):  # how near the bound, if not past it
                quartiles = np.percentile(predicted[:, 0], [25, 50, 75])
                foresight[name][str(horizon)]["predicted_z_quartiles"] = quartiles.tolist()
    jump_z = buffer.next_obs[jumped_out(buffer, z_high) & second_half, 0]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "run": str(args.run_dir),
        "env": config.env,
        "window": args.window,
        "rows": rows,
        "final_model_sees_second_half_turn_overs_from_h_steps_before": foresight["turn_overs"],
        "final_model_sees_second_half_jumps_out_from_h_steps_before": foresight["jumps_out"],
        "second_half_jumps_out_real_z_median": float(np.median(jump_z)) if len(jump_z) else None,
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out / f"{args.name}.png", f"{config.env}: {args.run_dir.name}")
    for r in rows:
        lo, hi = (s // 1000 for s in r["env_steps"])
        rate = r["turn_overs_per_1k_upright_steps"]
        print(
            f"{lo:>4}-{hi}k  upside down {r['upside_down_share']:.2f}  turned over "
            f"{r['turn_overs']:>2} ({'-' if rate is None else f'{rate:.1f}'} per 1k upright)  "
            f"jumped out {r['jumps_out']:>2}  of {r['episodes_started']}"
        )
    for name, by_horizon in foresight.items():
        for horizon, f in by_horizon.items():
            near = f.get("predicted_z_quartiles")
            z = (
                ""
                if near is None
                else f" (predicted z {near[0]:.3f} / {near[1]:.3f} / {near[2]:.3f})"
            )
            print(f"final model: {f['seen']} of {f[name]} {name} seen {horizon} ahead{z}")
    print(f"wrote {args.out / args.name}.json and .png")


if __name__ == "__main__":
    main()
