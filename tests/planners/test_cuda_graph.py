"""Whole-plan CUDA graphs: the captured plan is the eager plan, and replays see in-place updates.

These need a GPU (the benchmark script for the speed issue runs them on one); without CUDA
the planners never capture, which ``test_without_cuda_planners_never_capture`` checks.
"""

import numpy as np
import pytest
import torch

from dynaplan import tasks
from dynaplan.agents.mpc import MPCAgent
from dynaplan.envs import POINT_MASS_ID
from dynaplan.models import DynamicsModel
from dynaplan.planners import PLANNERS, make_planner

from .test_planners import FAST_OPTIONS, HIGH, LOW, OPTIMUM, TARGET

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def quadratic_on(device: torch.device):
    target = TARGET.to(device)
    return lambda actions: -((actions - target) ** 2).sum((1, 2))


def test_without_cuda_planners_never_capture():
    planner = make_planner("cem", LOW, HIGH, 4, cuda_graph=True, **FAST_OPTIONS["cem"])
    planner.plan(quadratic_on(torch.device("cpu")))
    assert not planner.cuda_graph and planner._graph is None


@needs_cuda
@pytest.mark.parametrize("name", list(PLANNERS))
def test_captured_plans_find_the_bounded_optimum(name):
    horizon = 1 if name == "shooting" else 4
    planner = make_planner(
        name, LOW, HIGH, horizon, device=CUDA, cuda_graph=True, **FAST_OPTIONS[name]
    )
    objective = quadratic_on(CUDA)
    plans = [planner.plan(objective) for _ in range(3)]
    assert planner.cuda_graph and planner._graph is not None, "capture fell back to eager"
    # CUDA draws other random numbers than the CPU the options were tuned on: looser for the
    # purely sampling planners (MPPI missed 0.05 by 0.002 once)
    tolerance = 0.1 if name in ("shooting", "mppi") else 0.05
    assert (plans[-1].cpu() - OPTIMUM).abs().max() < tolerance, plans[-1]
    if name in ("shooting", "cem", "mppi"):  # fresh random draws on every replay
        planner.reset()
        assert not torch.equal(planner.plan(objective), planner.plan(objective))


def toy_agent(cuda_graph: bool) -> MPCAgent:
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, ensemble_size=3, hidden_size=32, num_layers=2).to(CUDA)
    planner = make_planner(
        "grad", np.array([-1.0, -1.0]), np.array([1.0, 1.0]), 5, device=CUDA,
        cuda_graph=cuda_graph, num_candidates=1, iterations=10, lr=0.1,
    )  # fmt: skip
    return MPCAgent(model, tasks.get(POINT_MASS_ID), planner, gamma=0.95)


@needs_cuda
def test_a_captured_agent_acts_like_an_eager_one_and_sees_weight_updates():
    """One candidate from the warm start: gradient ascent is deterministic, so the captured
    and the eager agent must agree, also after the model's weights change in place."""
    graphed, eager = toy_agent(cuda_graph=True), toy_agent(cuda_graph=False)
    observations = np.random.default_rng(0).uniform(-1, 1, size=(6, 2)).astype(np.float32)
    for step, obs in enumerate(observations):
        if step == 3:  # a training round in between: the same in-place update on both models
            for model in (graphed.model, eager.model):
                with torch.no_grad():
                    for parameter in model.parameters():
                        parameter.mul_(1.5)
                    model.target_norm.std.mul_(2.0)
        np.testing.assert_allclose(graphed.act(obs), eager.act(obs), rtol=1e-4, atol=1e-5)
    assert graphed.planner._graph is not None


@needs_cuda
def test_a_captured_plan_takes_each_new_proposal():
    """Two candidates, the warm start and the proposal itself (no noise on it): deterministic,
    so the captured and the eager planner agree whatever the proposal of the moment."""
    objective = quadratic_on(CUDA)
    planners = [
        make_planner(
            "grad", LOW, HIGH, 4, device=CUDA, cuda_graph=graph, num_candidates=2,
            iterations=5, lr=0.05, warm_share=0.0, proposal_share=0.5,
        )
        for graph in (True, False)
    ]  # fmt: skip
    for proposal in (torch.zeros(4, 2), torch.full((4, 2), 0.3), torch.full((4, 2), -0.5)):
        graphed, eager = (p.plan(objective, proposal=proposal.to(CUDA)) for p in planners)
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)
    assert planners[0]._graph is not None and planners[0]._graph.proposal is not None
