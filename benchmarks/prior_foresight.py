"""Does the learned model see the policy prior's falls coming? Real episodes vs model forecasts.

The start-state check (``policy.check_horizon``) undoes a prior refit whose return, rolled out
closed loop through the model from the buffer's reset states, drops. It can only catch a gait
that falls if the model predicts that fall. This script measures whether it does. The prior
acts alone (no planning) for fresh episodes in the real env. From every real state ``s_t`` of
each episode the model then rolls the same prior out closed loop for up to ``--lookahead``
steps and notes the first predicted termination. For an episode that really ends at step
``T`` the right answer from ``s_t`` is "a fall in ``T − t`` steps". Two numbers per run:

- from the reset state (what the check sees): predicted episode length and
  ``check_horizon``-step return, against the real ones;
- by steps to the real fall (1–10, 11–30, 31–100, 101–300): the share of real states from
  which the model predicts a fall within the lookahead.

    .venv/bin/python benchmarks/prior_foresight.py runs/long/hopper-check300-seed1 --name x
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from run_analysis import run_parser, save_figure

from dynaplan.agents.factory import load_mpc_agent
from dynaplan.envs import make_env
from dynaplan.models import DynamicsModel
from dynaplan.planners.objective import discounted_returns
from dynaplan.policy import PolicyAgent, PolicyPrior
from dynaplan.rundir import RunDir
from dynaplan.tasks import Task

OUT = Path(__file__).parent / "results" / "prior_foresight"
BUCKETS = ((1, 10), (11, 30), (31, 100), (101, 300))
"""Steps to the real fall, grouped: how far ahead the forecasts are scored."""


def forecast_fall(
    model: DynamicsModel, task: Task, policy: PolicyPrior, starts: torch.Tensor, lookahead: int
) -> np.ndarray:
    """``[N]`` int: the step (1-based) of the first predicted termination when ``policy`` acts
    closed loop through ``model`` from each row of ``starts [N, S]``; ``lookahead + 1`` where
    the forecast survives all ``lookahead`` steps."""
    first = torch.full((starts.shape[0],), lookahead + 1)
    alive = torch.ones(starts.shape[0], dtype=torch.bool)
    obs = starts
    with torch.no_grad():
        for step in range(1, lookahead + 1):
            obs = model.step(obs, policy(obs))
            fell = alive & task.terminated(obs)
            first[fell] = step
            alive &= ~fell
    return first.numpy()


def prior_episode(
    policy: PolicyPrior, env: gym.Env, seed: int
) -> tuple[np.ndarray, np.ndarray, bool]:
    """States ``[T, S]`` the prior acted in (reset state first), its rewards ``[T]``, and
    whether the episode ended by termination (a fall) rather than the time limit."""
    agent = PolicyAgent(policy)
    obs, _ = env.reset(seed=seed)
    states, rewards = [], []
    while True:
        states.append(obs)
        obs, reward, terminated, truncated, _ = env.step(agent.act(obs))
        rewards.append(float(reward))
        if terminated or truncated:
            return np.asarray(states, dtype=np.float32), np.asarray(rewards), bool(terminated)


def score(episodes: list[dict], lookahead: int) -> dict[str, dict[str, float]]:
    """Per bucket of real steps to the fall: share of states whose forecast predicts a fall."""
    scores = {}
    for low, high in BUCKETS:
        if high > lookahead:
            continue
        hits = [
            p <= lookahead
            for e in episodes
            if e["fell"]
            for r, p in zip(e["steps_to_fall"], e["forecast"], strict=True)
            if low <= r <= high
        ]
        scores[f"{low}-{high}"] = {
            "states": len(hits),
            "fall_predicted_share": float(np.mean(hits)) if hits else float("nan"),
        }
    return scores


def plot(episodes: list[dict], lookahead: int, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    for i, e in enumerate(episodes):
        if e["fell"]:
            forecast = np.minimum(e["forecast"], lookahead + 1)
            ax.plot(e["steps_to_fall"], forecast, ".", markersize=2, label=f"episode {i}")
    ax.plot([0, lookahead], [0, lookahead], "k--", linewidth=1, label="perfect forecast")
    ax.axhline(lookahead + 1, color="grey", linewidth=1)
    ax.set_xlim(0, lookahead)
    ax.set_xlabel("real steps to the fall")
    ax.set_ylabel(f"model's forecast (top line: no fall in {lookahead})")
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main() -> None:
    parser = run_parser(__doc__, OUT)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12345, help="first episode's reset seed")
    parser.add_argument("--lookahead", type=int, default=300)
    parser.add_argument("--note", default="", help="how the run was made, for the README row")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agent, config = load_mpc_agent(args.run_dir, device="cpu")
    if agent.policy is None:
        parser.error(f"{args.run_dir} has no policy prior; train with --policy.enabled")
    policy, model, task = agent.policy.eval(), agent.model.eval(), agent.task
    check_horizon = config.policy.check_horizon or args.lookahead
    env = make_env(config.env, **config.env_kwargs)
    episodes = []
    for i in range(args.episodes):
        states, rewards, fell = prior_episode(policy, env, args.seed + i)
        length = len(states)
        forecast = forecast_fall(model, task, policy, torch.from_numpy(states), args.lookahead)
        start = torch.from_numpy(states[:1])
        predicted_check = discounted_returns(
            model, task, start, lambda t, obs: policy(obs), check_horizon, gamma=1.0
        )
        episodes.append(
            {
                "length": length,
                "return": float(rewards.sum()),
                "fell": fell,
                "forecast_length_from_reset": int(forecast[0]),
                "check_return_model": float(predicted_check.item()),
                "check_return_real": float(rewards[:check_horizon].sum()),
                "steps_to_fall": (length - np.arange(length)).tolist(),
                "forecast": forecast.tolist(),
            }
        )
    env.close()
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = RunDir(args.run_dir).read_metrics()
    report = {
        "run": str(args.run_dir),
        "env": config.env,
        "env_steps": int(metrics[-1]["env_steps"]) if metrics else None,  # the checkpoint's data
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)",
        "note": args.note,
        "lookahead": args.lookahead,
        "check_horizon": check_horizon,
        "forecast_share_by_steps_to_fall": score(episodes, args.lookahead),
        "episodes": [
            {k: v for k, v in e.items() if k not in ("steps_to_fall", "forecast")} for e in episodes
        ],
    }
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(episodes, args.lookahead, args.out / f"{args.name}.png", f"{config.env}: {args.name}")
    for e in report["episodes"]:
        forecast = e["forecast_length_from_reset"]
        print(
            f"real: {e['length']:>4} steps, return {e['return']:7.1f}, "
            f"{'fell' if e['fell'] else 'time limit'}; from reset the model forecasts "
            f"{f'a fall at {forecast}' if forecast <= args.lookahead else 'no fall'}; "
            f"{check_horizon}-step return: model {e['check_return_model']:.0f}, "
            f"real {e['check_return_real']:.0f}"
        )
    for bucket, s in report["forecast_share_by_steps_to_fall"].items():
        if not s["states"]:
            continue  # no real fall that far ahead (or none at all)
        print(
            f"{bucket:>8} steps before a real fall: a fall forecast from "
            f"{s['fall_predicted_share']:.2f} of {s['states']} states"
        )
    print(f"wrote {args.out / args.name}.json and .png")


if __name__ == "__main__":
    main()
