"""The paper's comparisons as one command each: seeds × variants, then compare.

``dynaplan experiment NAME --seeds N --out DIR [--budget small|full] [--backend ray]`` runs
every variant of ``NAME`` for every seed (each a normal run folder under ``DIR/runs/VARIANT/
seed_S``; one that exists is resumed, one that finished is skipped) on the chosen
``execution`` backend and writes the comparison into ``DIR/compare``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dynaplan.agents.baselines import BaselineConfig
from dynaplan.analysis.compare import Comparison, compare
from dynaplan.config import TrainConfig, load_preset
from dynaplan.errors import ConfigError
from dynaplan.execution import Execution, RunConfig, RunTask, run_all


@dataclass(frozen=True)
class Budget:
    """Env steps and evaluation effort of one budget level."""

    mbrl_steps: int
    baseline_steps: int
    eval_episodes: int
    small: bool


BUDGETS = {
    "small": Budget(mbrl_steps=400, baseline_steps=2048, eval_episodes=1, small=True),
    "full": Budget(mbrl_steps=0, baseline_steps=0, eval_episodes=0, small=False),
}
"""``full`` keeps each preset's own steps and evaluation (0 = the preset's value)."""


@dataclass(frozen=True)
class Experiment:
    """Variants (name -> config without a seed) and how to compare them."""

    variants: Callable[[Budget], dict[str, RunConfig]]
    threshold: float | None = None
    references: tuple[str, ...] = ()
    log_x: bool = False


def _mbrl(preset: str, budget: Budget, **changes) -> TrainConfig:
    config = dataclasses.replace(load_preset(preset), **changes)
    if budget.small:
        config.total_steps, config.random_steps = budget.mbrl_steps, budget.mbrl_steps // 2
        config.steps_per_iteration = budget.mbrl_steps // 4
        config.eval_episodes = budget.eval_episodes
        config.search = dataclasses.replace(config.search, num_candidates=4, iterations=2)
        config.dynamics = dataclasses.replace(config.dynamics, max_epochs=5)
    return config


def _baseline(env: str, algo: str, full_steps: int, budget: Budget, **kwargs) -> BaselineConfig:
    small = budget.small
    steps = budget.baseline_steps if small else full_steps
    return BaselineConfig(
        env=env,
        algo=algo,
        total_steps=steps,
        eval_every=steps // 2 if small else max(steps // 20, 1000),
        eval_episodes=budget.eval_episodes if small else 5,
        **kwargs,
    )


def _pendulum(budget: Budget) -> dict[str, RunConfig]:
    env = "InvertedPendulum-v5"
    return {
        "mbrl-H1": _mbrl("pendulum", budget, horizon=1),
        "mbrl-H10": _mbrl("pendulum", budget, horizon=10),
        "ppo": _baseline(env, "ppo", 50_000, budget),
    }


def _hopper(budget: Budget) -> dict[str, RunConfig]:
    env = "Hopper-v5"
    variants: dict[str, RunConfig] = {
        f"mbrl-mlp-H{h}": _mbrl("hopper", budget, horizon=h) for h in (1, 5, 10)
    }
    variants["mbrl-ensemble-H10"] = _mbrl("hopper", budget, model="ensemble")
    variants["mbrl-pets-H10"] = _mbrl("hopper", budget, model="pets")
    for algo, steps in (("ppo", 200_000), ("zero", 200_000), ("random", 200_000)):
        variants[algo] = _baseline(env, algo, steps, budget)
    return variants


def _ant(budget: Budget) -> dict[str, RunConfig]:
    env, obs27 = "Ant-v5", {"include_cfrc_ext_in_observation": False}
    variants: dict[str, RunConfig] = {"mbrl-mlp-H10": _mbrl("ant", budget)}
    for algo in ("sac", "zero", "random"):
        variants[algo] = _baseline(env, algo, 200_000, budget, env_kwargs=obs27)
    return variants


EXPERIMENTS: dict[str, Experiment] = {
    "pendulum": Experiment(_pendulum, threshold=1000.0, log_x=True),
    "hopper": Experiment(
        _hopper, references=("paper MBRL=250", "Nagabandi MBRL=100", "paper PPO 500k=1000")
    ),
    "ant": Experiment(_ant),
}


def run_experiment(
    name: str,
    seeds: int,
    out: str | Path,
    budget: str = "full",
    execution: Execution | None = None,
) -> Comparison:
    """Every variant × seed of experiment ``name`` (default: 2 local processes), then compare."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {sorted(EXPERIMENTS)}")
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {sorted(BUDGETS)}")
    if seeds <= 0:
        raise ConfigError(f"seeds must be positive, got {seeds}")
    experiment = EXPERIMENTS[name]
    out = Path(out)
    tasks = []
    for variant, config in experiment.variants(BUDGETS[budget]).items():
        for seed in range(seeds):
            seeded = dataclasses.replace(config, seed=seed, progress=False)
            seeded.validate()
            tasks.append(RunTask(seeded, str(out / "runs" / variant / f"seed_{seed}")))
    run_all(tasks, execution or Execution())
    return compare(
        [str(out / "runs" / "*" / "seed_*")],
        out / "compare",
        threshold=experiment.threshold,
        references=experiment.references,
        log_x=experiment.log_x,
    )
