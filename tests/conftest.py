import dataclasses

import pytest
import torch

from dynaplan.config import ModelConfig, PlannerConfig, TrainConfig
from dynaplan.envs import POINT_MASS_ID

torch.set_num_threads(1)  # tiny models: extra threads only add contention on CI's 2 cores

PLANNER_OPTIONS = {
    "shooting": PlannerConfig(num_samples=200),
    "cem": PlannerConfig(population=64, num_elites=8, iterations=3),
    "mppi": PlannerConfig(num_samples=64, iterations=3, temperature=0.1),
    "grad": PlannerConfig(num_candidates=4, iterations=5, lr=0.2),
    "cem-grad": PlannerConfig(population=32, num_elites=4, iterations=2, grad_steps=2),
}


def toy_config(planner: str = "grad", **overrides) -> TrainConfig:
    """A few-hundred-step run on the point-mass toy env with a tiny model."""
    base = dict(
        env=POINT_MASS_ID,
        planner=planner,
        horizon=3,
        total_steps=400,
        random_steps=200,
        steps_per_iteration=100,
        eval_episodes=2,
        progress=False,
        dynamics=ModelConfig(hidden_size=32, num_layers=2, max_epochs=40, patience=5),
        search=dataclasses.replace(PLANNER_OPTIONS.get(planner, PlannerConfig())),  # a copy
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture
def make_toy_config():
    return toy_config
