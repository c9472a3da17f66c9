"""Learning-curve figures from ``metrics.csv`` rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_learning_curve(rows: list[dict[str, float]], path: str | Path, title: str) -> None:
    """Evaluation return (mean ± std), the policy alone where it was evaluated too, and the
    training episodes' return against env steps, saved as PNG."""
    # imported here, so that importing dynaplan (whose loop draws this) loads no matplotlib
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["env_steps"] for r in rows])
    mean = np.array([r["eval_return_mean"] for r in rows])
    std = np.array([r["eval_return_std"] for r in rows])
    evaluated = np.isfinite(mean)  # NaN in the iterations between evaluations
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps[evaluated], mean[evaluated], marker="o", label="evaluation return")
    ax.fill_between(steps[evaluated], (mean - std)[evaluated], (mean + std)[evaluated], alpha=0.25)
    policy = np.array([r.get("policy_eval_return", np.nan) for r in rows])
    if np.isfinite(policy).any():
        alone = np.isfinite(policy)
        ax.plot(steps[alone], policy[alone], marker=".", label="policy alone")
    train = np.array([r["train_return"] for r in rows])
    finite = np.isfinite(train)  # NaN where no training episode ended in an iteration
    if finite.any():
        ax.plot(steps[finite], train[finite], "x--", alpha=0.7, label="training episodes")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
