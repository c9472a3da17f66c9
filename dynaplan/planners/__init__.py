"""Batched MPC planners; each optimises ``[H, A]`` for an objective ``f([B, H, A]) -> [B]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynaplan.errors import ConfigError
from dynaplan.planners.base import PlannerBase, sanitize_returns
from dynaplan.planners.cem import CEMPlanner
from dynaplan.planners.cem_grad import CEMGradientPlanner
from dynaplan.planners.gradient import GradientPlanner, gradient_ascent
from dynaplan.planners.mppi import MPPIPlanner
from dynaplan.planners.objective import ModelObjective
from dynaplan.planners.shooting import RandomShootingPlanner

PLANNERS: dict[str, type[PlannerBase]] = {
    "shooting": RandomShootingPlanner,
    "cem": CEMPlanner,
    "mppi": MPPIPlanner,
    "grad": GradientPlanner,
    "cem-grad": CEMGradientPlanner,
}


def make_planner(
    name: str,
    action_low: np.ndarray,
    action_high: np.ndarray,
    horizon: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **options: Any,
) -> PlannerBase:
    """A planner by name (``PLANNERS``) with its own keyword options."""
    if name not in PLANNERS:
        raise ConfigError(f"unknown planner {name!r}; choose one of {', '.join(PLANNERS)}")
    try:
        return PLANNERS[name](action_low, action_high, horizon, seed=seed, device=device, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for planner {name!r}: {exc}") from exc


__all__ = [
    "PLANNERS",
    "CEMGradientPlanner",
    "CEMPlanner",
    "GradientPlanner",
    "MPPIPlanner",
    "ModelObjective",
    "PlannerBase",
    "RandomShootingPlanner",
    "gradient_ascent",
    "make_planner",
    "sanitize_returns",
]
