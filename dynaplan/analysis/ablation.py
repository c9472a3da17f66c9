"""What limits a trained run's MPC: the same checkpoint evaluated under changed planning.

Each setting is a dict of dotted planning changes (``{"value.enabled": False}``,
``{"horizon": 5}``; see ``PLANNING_FIELDS``) applied to the run's config before its model,
value and prior are loaded, or :data:`PRIOR_ALONE` to act with the policy prior without
planning. Every setting plays the same evaluation episodes, so the differences are the
settings', not the start states'. Removing the terminal value separates the value's share
from the model's; planning less (fewer Adam steps, candidates only around the prior's plan)
or over a shorter horizon shows how far the planner exploits model and value error, and a
safety margin on the healthy ranges how far it walks to their edge. :func:`swap_parts` asks
what broke between two points of a run (a collapse): the later checkpoint with its model,
value and prior in turn taken from the earlier snapshot.
"""

from __future__ import annotations

import itertools
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from dynaplan import tasks
from dynaplan.agents.factory import load_mpc_agent
from dynaplan.agents.mpc import MPCAgent
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.evaluation import evaluate
from dynaplan.policy import PolicyAgent
from dynaplan.rundir import RunDir, last_evaluation
from dynaplan.sweep import parse_assignments
from dynaplan.types import Agent, ValueKind

PRIOR_ALONE = "prior alone"
"""The setting that acts with the run's policy prior, without planning."""

DEFAULT_SETTINGS: dict[str, dict[str, Any] | str] = {
    "as trained": {},
    PRIOR_ALONE: PRIOR_ALONE,
    "no terminal value": {"value.enabled": False},
    "no policy prior": {"policy.enabled": False},
    "all candidates around the prior": {"policy.share": 1.0},
    "1 Adam step": {"search.iterations": 1},
    "H 5": {"horizon": 5},
    "critic pessimism 1": {"value.pessimism": 1.0},
    "safety margin 0.03": {"search.safety_margin": 0.03},
    "1 Adam step, safety margin 0.03": {"search.iterations": 1, "search.safety_margin": 0.03},
}
"""The ablations of a run with a terminal value and a policy prior; those that need a part
the run does not have are left out."""


@dataclass
class AblationScore:
    setting: str
    changes: dict[str, Any] | str
    return_mean: float
    return_std: float
    returns: list[float]
    episode_length_mean: float
    ms_per_step: float


def select_settings(labels: list[str]) -> dict[str, dict[str, Any] | str]:
    """The :data:`DEFAULT_SETTINGS` named by ``labels``, in that order (all for none).

    A label holding ``=`` is a setting of its own: comma-separated planning changes, e.g.
    ``"search.safety_margin=0.15"`` or ``"horizon=5, search.iterations=1"``.
    """
    if not labels:
        return DEFAULT_SETTINGS
    unknown = [label for label in labels if label not in DEFAULT_SETTINGS and "=" not in label]
    if unknown:
        known = ", ".join(repr(label) for label in DEFAULT_SETTINGS)
        raise ConfigError(
            f"unknown ablation setting(s) {unknown}; known: {known}, or FIELD=VALUE changes"
        )
    return {
        label: DEFAULT_SETTINGS[label]
        if label in DEFAULT_SETTINGS
        else parse_assignments(label.split(","))
        for label in labels
    }


def applicable_settings(
    run_dir: str | Path, settings: dict[str, dict[str, Any] | str] = DEFAULT_SETTINGS
) -> dict[str, dict[str, Any] | str]:
    """``settings`` without those that switch off, use or tune a part the run lacks."""
    config = TrainConfig.load(RunDir.open(run_dir).config)  # a clear error if missing
    value, policy = config.value.enabled, config.policy.enabled
    critic = value and config.value.kind == ValueKind.CRITIC  # pessimism is the critics' only
    env = make_env(config.env, **config.env_kwargs)
    ranges = tasks.get(config.env, env).has_healthy_ranges
    env.close()
    has = {"value": value, "policy": policy, "critic": critic, "healthy ranges": ranges}
    part_of = {"value.pessimism": "critic", "search.safety_margin": "healthy ranges"}

    def needs(changes: dict[str, Any] | str) -> set[str]:
        if changes == PRIOR_ALONE:
            return {"policy"}
        parts = {part_of.get(path, path.split(".")[0]) for path in changes}
        return parts & set(has)

    return {label: ch for label, ch in settings.items() if all(has[p] for p in needs(ch))}


def ablate(
    run_dir: str | Path,
    episodes: int,
    seed: int,
    settings: dict[str, dict[str, Any] | str] = DEFAULT_SETTINGS,
    at_steps: int | None = None,
) -> list[AblationScore]:
    """Evaluate the run's checkpoint (its snapshot at ``at_steps`` env steps, if given) under
    each applicable setting on the same ``episodes`` (seeds ``seed, seed + 1, ...``) on the CPU,
    eagerly: the plans of a compiled rollout up to rounding, without a compile per setting in
    the timings."""
    scores = []
    for label, changes in applicable_settings(run_dir, settings).items():
        if changes == PRIOR_ALONE:
            mpc, config = load_mpc_agent(run_dir, "cpu", at_steps=at_steps)
            scores.append(_score(label, changes, PolicyAgent(mpc.policy), config, episodes, seed))
        else:
            eager = {"search.compile": False, **changes}  # type: ignore[dict-item]
            agent, config = load_mpc_agent(run_dir, "cpu", eager, at_steps)
            scores.append(_score(label, changes, agent, config, episodes, seed))
    if not scores:
        raise ConfigError(f"no setting applies to {run_dir}")
    return scores


SWAPPABLE_PARTS = {"model": "model", "value": "value", "prior": "policy"}
"""The learned parts a swap can take from another snapshot, by their checkpoint keys."""


def swap_parts(
    run_dir: str | Path,
    episodes: int,
    seed: int,
    donor_steps: int,
    at_steps: int | None = None,
) -> list[AblationScore]:
    """Which learned part broke between two points of a run: its checkpoint (the snapshot at
    ``at_steps``, if given) planning with every subset of its model, terminal value and prior
    replaced by the snapshot's at ``donor_steps``, on the same episodes; then each prior alone.

    If taking only the prior from before a collapse brings the return back, the prior broke;
    if only the model, the model. Settings are labelled by what was taken (``"as trained"``,
    ``"prior from 192,000"``, ..., ``"model + value + prior from 192,000"``)."""
    if donor_steps == at_steps:
        raise ConfigError(f"the snapshot at {donor_steps} is the checkpoint itself; pick another")
    run = RunDir.open(run_dir)
    config = TrainConfig.load(run.config)
    donor = run.load_checkpoint(at_steps=donor_steps)
    eager = {"search.compile": False}

    def agent_with(taken: tuple[str, ...]) -> tuple[MPCAgent, TrainConfig]:
        agent, config = load_mpc_agent(run_dir, "cpu", eager, at_steps)
        for part in taken:
            _learned_parts(agent)[part].load_state_dict(donor[SWAPPABLE_PARTS[part]])
        return agent, config

    has = {"model": True, "value": config.value.enabled, "prior": config.policy.enabled}
    parts = [part for part in SWAPPABLE_PARTS if has[part]]
    scores = []
    for size in range(len(parts) + 1):
        for taken in itertools.combinations(parts, size):
            label = f"{' + '.join(taken)} from {donor_steps:,}" if taken else "as trained"
            changes = {part: donor_steps for part in taken}
            scores.append(_score(label, changes, *agent_with(taken), episodes, seed))
    if "prior" in parts:
        alone = {PRIOR_ALONE: (), f"{PRIOR_ALONE} from {donor_steps:,}": ("prior",)}
        for label, taken in alone.items():
            agent, _ = agent_with(taken)
            changes = {"prior": donor_steps} if taken else PRIOR_ALONE
            scores.append(_score(label, changes, PolicyAgent(agent.policy), config, episodes, seed))
    return scores


def _learned_parts(agent: MPCAgent) -> dict[str, torch.nn.Module | None]:
    return {"model": agent.model, "value": agent.terminal_value, "prior": agent.policy}


def _score(
    label: str,
    changes: dict[str, Any] | str,
    agent: Agent,
    config: TrainConfig,
    episodes: int,
    seed: int,
) -> AblationScore:
    """``agent`` on ``episodes`` episodes of the run's env from ``seed`` (an MPC agent's plan
    time per env step too)."""
    env = make_env(config.env, **config.env_kwargs)
    result = evaluate(agent, env, episodes, seed)
    env.close()
    steps = sum(result.lengths)
    plan_seconds = getattr(agent, "plan_seconds", None)
    return AblationScore(
        label,
        changes,
        result.mean,
        result.std,
        result.returns,
        steps / len(result.lengths),
        1000 * plan_seconds / steps if plan_seconds is not None else float("nan"),
    )


def write_ablation(
    scores: list[AblationScore],
    run_dir: str | Path,
    episodes: int,
    out: Path,
    name: str,
    note: str = "",
    at_steps: int | None = None,
    swapped_from: int | None = None,
) -> list[Path]:
    """``ablation_NAME.json`` and ``.png`` (return per setting) in ``out``; ``note`` says how
    the run was made, ``at_steps`` which snapshot was ablated (None: the last checkpoint) and
    ``swapped_from`` the donor snapshot of :func:`swap_parts` scores (None: planning changed)."""
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir)
    config = TrainConfig.load(run.config)
    rows = run.read_metrics()
    if at_steps is not None:
        rows = [r for r in rows if r["env_steps"] <= at_steps]
    last = last_evaluation(rows)
    summary = {
        "run_dir": str(run_dir),
        "env": config.env,
        "env_steps": int(rows[-1]["env_steps"]) if rows else None,  # the checkpoint's data
        "last_training_evaluation": last["eval_return_mean"] if last else None,
        "changed": "planning changed"
        if swapped_from is None
        else f"learned parts taken from {swapped_from:,} env steps",
        "at_steps": at_steps,  # None: the last checkpoint
        "swapped_from": swapped_from,
        "episodes": episodes,
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)",
        "note": note,
        "results": [asdict(s) for s in scores],
    }
    files = [out / f"ablation_{name}.json", out / f"ablation_{name}.png"]
    files[0].write_text(json.dumps(summary, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(scores) + 1.2))
    top_down = scores[::-1]
    ax.barh(
        [s.setting for s in top_down],
        [s.return_mean for s in top_down],
        xerr=[s.return_std for s in top_down],
    )
    ax.set_xlabel(f"return ({episodes} episodes)")
    steps = f" at {summary['env_steps']:,} env steps" if rows else ""
    ax.set_title(f"{config.env}: one checkpoint{steps}\n{summary['changed']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(files[1], dpi=120)
    plt.close(fig)
    return files
