"""Time mbrl-lib 0.2.0's PETS agent; ``mbrl_lib_speed.py`` runs this inside mbrl-lib's venv.

    /tmp/mbrl-venv/bin/python benchmarks/mbrl_lib_worker.py '{"ensemble_size": 7, ...}'

The argument is one JSON object with the keys of ``main``'s ``settings``; the last line printed
is one JSON object with the per-step times. The agent is built the way mbrl-lib's
``algorithms/pets.py`` builds it (``create_one_dim_tr_model``, ``ModelEnv``,
``create_trajectory_optim_agent_for_model``) from the configuration that its ``examples/conf``
composes for ``overrides=pets_hopper``: ``algorithm/pets.yaml``,
``dynamics_model/gaussian_mlp_ensemble.yaml`` and ``action_optimizer/cem.yaml`` (inlined
here: the 0.2.0 wheel does not ship ``conf/action_optimizer``). Two deliberate departures:
``learned_rewards`` is off and the reward is dynaplan's Hopper reward (``hopper_reward``), and
the model is untrained (planning time does not depend on the weights). ``_recursive_: False``
keeps hydra-core 1.3 (mbrl-lib pins 1.0.3) from instantiating the nested configurations
(``activation_fn_cfg``, ``optimizer_cfg``) that mbrl-lib instantiates itself. Only mbrl-lib's model
and planner are imported: its env helpers need the old ``gym`` and ``mujoco-py``.
"""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import hydra
import mbrl
import mbrl.env.termination_fns
import mbrl.models
import mbrl.planning
import mbrl.util.common
import numpy as np
import omegaconf
import torch

OBS_DIM, ACT_DIM = 11, 3
"""Hopper's observation and action sizes."""


def hopper_reward(act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """dynaplan's ``HopperTask.reward`` at Hopper-v5's defaults, as mbrl-lib's ``[N, 1]``.

    ``(vx + 1)·tanh(20·m) − 0.001·‖a‖²`` with ``m`` the margin of ``z > 0.7``, ``|θ| < 0.2``.
    """
    margin = torch.minimum(next_obs[:, 0] - 0.7, 0.2 - next_obs[:, 1].abs())
    reward = (next_obs[:, 5] + 1.0) * torch.tanh(20.0 * margin)
    return (reward - 1e-3 * act.square().sum(-1)).unsqueeze(-1)


def pets_config(settings: dict[str, Any]) -> omegaconf.DictConfig:
    """The composed PETS Hopper configuration, with the benchmark's sizes."""
    return omegaconf.OmegaConf.create(
        {
            "device": "cpu",
            "dynamics_model": {
                "_target_": "mbrl.models.GaussianMLP",
                "_recursive_": False,
                "device": "cpu",
                "num_layers": 4,
                "ensemble_size": settings["ensemble_size"],
                "hid_size": 200,
                "deterministic": False,
                "propagation_method": "random_model",
                "learn_logvar_bounds": False,
                "activation_fn_cfg": {"_target_": "torch.nn.SiLU"},
            },
            "algorithm": {
                "learned_rewards": False,
                "target_is_delta": True,
                "normalize": True,
                "normalize_double_precision": True,
                "num_particles": settings["particles"],
                "agent": {
                    "_target_": "mbrl.planning.TrajectoryOptimizerAgent",
                    "_recursive_": False,
                    "action_lb": "???",
                    "action_ub": "???",
                    "planning_horizon": settings["horizon"],
                    "optimizer_cfg": "${action_optimizer}",
                    "replan_freq": 1,
                    "verbose": False,
                },
            },
            "overrides": {"num_elites": min(5, settings["ensemble_size"])},
            "action_optimizer": {
                "_target_": "mbrl.planning.CEMOptimizer",
                "num_iterations": settings["iterations"],
                "elite_ratio": settings["elite_ratio"],
                "population_size": settings["population"],
                "alpha": settings["alpha"],
                "lower_bound": "???",
                "upper_bound": "???",
                "return_mean_elites": True,
                "device": "cpu",
                "clipped_normal": False,
            },
        }
    )


def build_agent(settings: dict[str, Any]) -> mbrl.planning.TrajectoryOptimizerAgent:
    """The PETS agent over an untrained model, as ``mbrl.algorithms.pets.train`` builds it."""
    torch.manual_seed(settings["seed"])
    cfg = pets_config(settings)
    model = mbrl.util.common.create_one_dim_tr_model(cfg, (OBS_DIM,), (ACT_DIM,))
    spaces = SimpleNamespace(  # all that ModelEnv and complete_agent_cfg read of the env
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32),
    )
    generator = torch.Generator(device="cpu").manual_seed(settings["seed"])
    model_env = mbrl.models.ModelEnv(
        spaces, model, mbrl.env.termination_fns.hopper, hopper_reward, generator=generator
    )
    return mbrl.planning.create_trajectory_optim_agent_for_model(
        model_env, cfg.algorithm.agent, num_particles=cfg.algorithm.num_particles
    )


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(settings["threads"])
    agent = build_agent(settings)
    obs = np.asarray(settings["start"], dtype=np.float32)
    for _ in range(settings["warmup"]):
        agent.act(obs)
    step_ms = []
    for _ in range(settings["steps"]):
        began = time.perf_counter()
        agent.act(obs)
        step_ms.append(1000 * (time.perf_counter() - began))
    versions = {
        "mbrl": mbrl.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "hydra-core": hydra.__version__,
        "omegaconf": omegaconf.__version__,
        "gymnasium": gym.__version__,
        "python": sys.version.split()[0],
    }
    elites = agent.optimizer.optimizer.elite_num
    print(json.dumps({"step_ms": step_ms, "cem_elites": int(elites), "versions": versions}))


if __name__ == "__main__":
    main()
