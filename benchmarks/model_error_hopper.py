"""Model error of a single MLP on Hopper-v5 trained on random-action data (paper Fig. 5–8).

Collects ~5k uniform-random transitions, trains ``DynamicsModel(11, 3, 200, 3)`` for up to
30 epochs, then measures one-step and open-loop errors on held-out random episodes (other
seeds). The figures and ``model_error.json`` describe the longest held-out episode;
``benchmark.json`` adds the setup, timings and the errors pooled over all held-out episodes.

    .venv/bin/python benchmarks/model_error_hopper.py   # about a minute on one CPU core
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from dynaplan.analysis import model_error
from dynaplan.buffer import ReplayBuffer
from dynaplan.models import DynamicsModel, ModelTrainer

ENV_ID = "Hopper-v5"
HORIZONS = [1, 5, 10, 20]
OUT = Path(__file__).parent / "results" / "model_error_hopper"


def random_episodes(env: gym.Env, seed: int, min_steps: int) -> list[model_error.Episode]:
    """Uniform-random episodes, one seed each from ``seed`` on, until ``min_steps`` in all."""
    episodes, steps = [], 0
    while steps < min_steps:
        env.action_space.seed(seed)
        label = f"random episode, seed {seed}"
        episode = model_error.collect_episode(env, lambda _: env.action_space.sample(), seed, label)
        episodes.append(episode)
        steps += len(episode)
        seed += 1
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=5000)
    parser.add_argument("--test-steps", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    env = gym.make(ENV_ID)
    started = time.perf_counter()
    train = random_episodes(env, seed=0, min_steps=args.train_steps)
    test = random_episodes(env, seed=100_000, min_steps=args.test_steps)
    collect_s = time.perf_counter() - started
    env.close()

    buffer = ReplayBuffer(11, 3)
    for k, ep in enumerate(train):
        for t in range(len(ep)):
            buffer.add(ep.obs[t], ep.actions[t], 0.0, ep.next_obs[t], False, False, k)
    model = DynamicsModel(11, 3, hidden_size=200, num_layers=3)
    started = time.perf_counter()
    fit = ModelTrainer(model).fit(buffer, np.random.default_rng(0), max_epochs=args.epochs)
    train_s = time.perf_counter() - started

    features = model_error.default_features(ENV_ID, 11)
    longest = max(test, key=len)
    report = model_error.analyse_episode(
        model,
        longest.obs,
        longest.actions,
        longest.next_obs,
        features,
        HORIZONS,
        starts=[0, 65],
        label=f"{ENV_ID}, {longest.label}",
    )
    model_error.write_report(report, args.out)

    # All held-out episodes pooled: mean over every (episode, t) with t >= H.
    pooled: dict[int, list[np.ndarray]] = {h: [] for h in HORIZONS}
    for ep in test:
        for h, err in model_error.horizon_errors(model, ep.states, ep.actions, HORIZONS).items():
            pooled[h].append(err[h:])
    pooled_mae = {
        name: {str(h): float(np.mean(np.concatenate(pooled[h])[:, i])) for h in HORIZONS}
        for name, i in features.items()
    }
    summary = report.summary()
    result = {
        "env": ENV_ID,
        "model": "mlp 3x200 silu",
        "train_transitions": len(buffer),
        "train_episodes": len(train),
        "fit": {"epochs": fit.epochs, "train_loss": fit.train_loss, "val_loss": fit.val_loss},
        "test_episodes": len(test),
        "test_episode_lengths": [len(ep) for ep in test],
        "seconds": {"collect": round(collect_s, 1), "train": round(train_s, 1)},
        "longest_test_episode": summary,
        "pooled_mean_abs_error": pooled_mae,
        "pooled_ratio_20_to_1": {name: by_h["20"] / by_h["1"] for name, by_h in pooled_mae.items()},
    }
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("fit", "seconds", "test_episode_lengths")}))
    for name in features:
        longest_row = "  ".join(
            f"H={h}: {summary['mean_abs_error'][name][str(h)]:.4f}" for h in HORIZONS
        )
        pooled_row = "  ".join(f"H={h}: {pooled_mae[name][str(h)]:.4f}" for h in HORIZONS)
        print(f"{name:<13} longest ({len(longest)} steps) {longest_row}")
        print(f"{'':<13} pooled ({len(test)} episodes) {pooled_row}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
