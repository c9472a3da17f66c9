"""Can the policy prior's start-state check see a prior get worse over a run?

The check (``policy.check_horizon``) undoes a refit when the new prior's model return from
the buffer's reset states falls more than ``check_tolerance`` below the old prior's, both
under the model of that moment. :func:`check_returns` scores the prior of every snapshot
under the model of every snapshot the same way. Reading down a column shows how model refits
alone move a prior's score (the reference the next refit is held to); reading along a row
shows whether one model can tell a prior that walked from one that broke. If the row of the
final model scores them alike, no check of this kind could have kept the better prior.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from dynaplan.agents.factory import build_policy_trainer, load_mpc_agent
from dynaplan.buffer import ReplayBuffer
from dynaplan.config import TrainConfig
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.rundir import RunDir


@dataclass
class CheckMatrix:
    """``returns[i][j]``: the check return of the prior at ``steps[j]`` under the model at
    ``steps[i]``, from the reset states the run had when that model was fitted (at the start
    of the iteration that ended at ``steps[i]``); ``returns[i][i]`` is the check return the
    run logged there."""

    steps: list[int]
    returns: list[list[float]]
    check_horizon: int
    starts: list[int]
    """How many reset states each row started from."""


def check_returns(run_dir: str | Path, steps: list[int]) -> CheckMatrix:
    """The start-state check return of each snapshot's prior under each snapshot's model
    (and the policy task the run trained its prior against), on the CPU."""
    run = RunDir.open(run_dir)
    config = TrainConfig.load(run.config)
    if not (config.policy.enabled and config.policy.check_horizon > 0):
        raise ConfigError(
            f"{run.path} has no policy prior with a start-state check (policy.enabled and "
            "policy.check_horizon > 0); there is nothing to score"
        )
    env = make_env(config.env, **config.env_kwargs)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    buffer = ReplayBuffer.from_journal(run.journal, obs_dim, act_dim)
    agents = [load_mpc_agent(run.path, "cpu", at_steps=s)[0] for s in steps]
    priors = [copy.deepcopy(agent.policy.state_dict()) for agent in agents]
    first = buffer.episode_starts()
    collected = [config.random_steps, *(int(row["env_steps"]) for row in run.read_metrics())]
    rows, counts = [], []
    for model_steps, agent in zip(steps, agents, strict=True):
        trainer = build_policy_trainer(config, agent)
        fitted_at = max(size for size in collected if size < model_steps)
        starts = buffer.batch(first[first < fitted_at]).obs
        row = []
        for prior in priors:
            agent.policy.load_state_dict(prior)
            row.append(trainer.start_state_return(starts))
        rows.append(row)
        counts.append(len(starts))
    return CheckMatrix(list(steps), rows, config.policy.check_horizon, counts)
