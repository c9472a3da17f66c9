import numpy as np
import pytest
import torch

from dynaplan import tasks
from dynaplan.envs import make_env
from dynaplan.errors import ConfigError
from dynaplan.planners import PLANNERS, ModelObjective, make_planner, sanitize_returns
from dynaplan.tasks import Task

LOW, HIGH = np.array([-1.0, -0.2]), np.array([1.0, 0.5])
TARGET = torch.tensor([0.4, -0.6])  # the second coordinate lies below its bound
OPTIMUM = torch.tensor([0.4, -0.2])  # ... so the bounded optimum is on the boundary

FAST_OPTIONS = {
    "shooting": dict(num_samples=4000),
    "cem": dict(population=300, num_elites=30, iterations=6),
    "mppi": dict(num_samples=300, iterations=6, temperature=0.02, noise_std=0.3),
    "grad": dict(num_candidates=8, iterations=60, lr=0.05),
    "cem-grad": dict(population=100, num_elites=10, iterations=3, grad_steps=10),
}


def quadratic(actions: torch.Tensor) -> torch.Tensor:
    """``-Σ_t ‖a_t − target‖²``; ``actions: [B, H, A] -> [B]``."""
    return -((actions - TARGET) ** 2).sum((1, 2))


def planner(name: str, horizon: int = 4, seed: int = 0, **overrides):
    return make_planner(name, LOW, HIGH, horizon, seed=seed, **{**FAST_OPTIONS[name], **overrides})


@pytest.mark.parametrize("name", list(PLANNERS))
def test_finds_the_bounded_optimum_of_a_quadratic(name):
    horizon = 1 if name == "shooting" else 4  # uniform sampling scales badly with dimension
    p = planner(name, horizon=horizon)
    for _ in range(3):  # warm starts help the sampling planners converge
        plan = p.plan(quadratic)
    assert plan.shape == (horizon, 2)
    tolerance = 0.1 if name == "shooting" else 0.05
    assert (plan - OPTIMUM).abs().max() < tolerance, plan


@pytest.mark.parametrize("name", list(PLANNERS))
def test_plans_respect_the_bounds(name):
    plan = planner(name).plan(lambda a: (a**2).sum((1, 2)) * 100)  # pushes to the corners
    low, high = (
        torch.as_tensor(LOW, dtype=torch.float32),
        torch.as_tensor(HIGH, dtype=torch.float32),
    )
    assert torch.all(plan >= low - 1e-6) and torch.all(plan <= high + 1e-6)


@pytest.mark.parametrize("name", list(PLANNERS))
def test_same_seed_same_plan(name):
    a = planner(name, seed=7).plan(quadratic)
    b = planner(name, seed=7).plan(quadratic)
    c = planner(name, seed=8).plan(quadratic)
    torch.testing.assert_close(a, b)
    if name != "grad":  # gradient ascent converges to the same optimum from any seed
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", list(PLANNERS))
def test_nan_and_inf_returns_are_never_chosen(name):
    """Sequences whose first action is positive return NaN/+inf; the plan avoids them."""

    def poisoned(actions: torch.Tensor) -> torch.Tensor:
        returns = -((actions - 0.3) ** 2).sum((1, 2))
        bad = actions[:, 0, 0] > 0
        poison = torch.where(actions[:, 0, 1] > 0, torch.inf, torch.nan)
        return torch.where(bad, poison, returns)

    plan = planner(name).plan(poisoned)
    assert torch.isfinite(plan).all()
    assert plan[0, 0] <= 0


def test_sanitize_returns():
    out = sanitize_returns(torch.tensor([1.0, torch.nan, torch.inf, -torch.inf]))
    assert out[0] == 1 and torch.all(out[1:] == -torch.inf)


@pytest.mark.parametrize("name", list(PLANNERS))
def test_warm_start_is_the_previous_plan_shifted(name):
    p = planner(name, horizon=5)
    first = p.plan(quadratic)
    start = p._warm_start(2)
    torch.testing.assert_close(p._to_env(start[:3]), first[2:])
    torch.testing.assert_close(start[3:], torch.zeros(2, 2))
    p.reset()
    torch.testing.assert_close(p._warm_start(1), torch.zeros(5, 2))


def test_planner_state_round_trip_reproduces_the_next_plan():
    p = planner("cem")
    p.plan(quadratic)
    state = p.state_dict()
    expected = p.plan(quadratic)
    q = planner("cem", seed=99)
    q.load_state_dict(state)
    torch.testing.assert_close(q.plan(quadratic), expected)


def test_a_state_saved_on_another_device_type_keeps_the_plan_and_the_seeded_generator():
    p = planner("cem")
    p.plan(quadratic)
    state = p.state_dict()
    state["generator"] = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state
    q = planner("cem", seed=99)
    q.load_state_dict(state)  # setting a CPU generator to that state would raise
    torch.testing.assert_close(q._previous, p._previous)
    assert torch.equal(q.generator.get_state(), planner("cem", seed=99).generator.get_state())
    assert torch.isfinite(q.plan(quadratic)).all()


def test_unknown_planner_and_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown planner"):
        make_planner("ilqr", LOW, HIGH, 3)
    with pytest.raises(ConfigError, match="bad options"):
        make_planner("cem", LOW, HIGH, 3, num_candidates=3)
    with pytest.raises(ConfigError, match="horizon"):
        make_planner("grad", LOW, HIGH, 0)
    with pytest.raises(ConfigError, match="bounds"):
        make_planner("grad", HIGH, LOW, 3)


class _Integrator:
    """A stand-in model ``s' = s + a`` with the ``step`` signature of DynamicsModel."""

    def step(self, obs, action, propagation=None, generator=None):
        return obs + action


def test_objective_discounts_and_stops_after_termination():
    task = Task.from_functions(
        reward=lambda o, a, n: torch.ones(n.shape[:-1]),
        terminated=lambda n: n[..., 0] > 2.5,
    )
    start = torch.zeros(1)
    objective = ModelObjective(_Integrator(), task, start, gamma=0.5)
    actions = torch.ones(2, 4, 1)
    actions[1] = 0.0  # never terminates
    # sequence 0 reaches 3 at step 3 (t = 2): rewards at t = 0, 1, 2 count, then none
    expected = torch.tensor([1 + 0.5 + 0.25, 1 + 0.5 + 0.25 + 0.125])
    torch.testing.assert_close(objective(actions), expected)


def test_objective_adds_the_terminal_value_of_live_rollouts_only():
    task = Task.from_functions(lambda o, a, n: torch.zeros(n.shape[:-1]), lambda n: n[..., 0] > 2.5)
    objective = ModelObjective(
        _Integrator(), task, torch.zeros(1), gamma=0.5, terminal_value=lambda s: 10 * s[:, 0]
    )
    actions = torch.stack([torch.full((2, 1), 1.0), torch.full((2, 1), 2.0)])
    # alive: V(2) * 0.25 = 5; sequence 1 reaches 4 > 2.5 and is dead: 0
    torch.testing.assert_close(objective(actions), torch.tensor([5.0, 0.0]))


class _AngleIntegrator:
    """A stand-in Hopper model: the one action moves the torso angle (``obs[1]``) by itself."""

    def step(self, obs, action, propagation=None, generator=None):
        return obs + torch.nn.functional.pad(action[..., :1], (1, obs.shape[-1] - 2))


def test_the_termination_gradient_shows_a_plan_what_a_fall_costs():
    env = make_env("Hopper-v5")
    hopper = tasks.get("Hopper-v5", env)
    env.close()
    start = torch.zeros(hopper.obs_dim)
    start[0], start[1] = 1.25, 0.17  # 0.03 inside the angle bound 0.2
    leaning = torch.full((2, 3, 3), 0.02)  # past the bound at the second step
    leaning[1] = 0.005  # stays inside: 0.185 after three steps

    def returns_and_gradient(task, start_value=300.0):
        value = lambda s: torch.full(s.shape[:1], start_value)  # noqa: E731
        objective = ModelObjective(_AngleIntegrator(), task, start, terminal_value=value)
        actions = leaning.clone().requires_grad_()
        returns = objective(actions)
        returns.sum().backward()
        return returns.detach(), actions.grad[:, :, 0]

    (plain, plain_grad), (felt, felt_grad) = map(
        returns_and_gradient, (hopper, hopper.with_termination_gradient(True))
    )
    torch.testing.assert_close(felt, plain)  # the returns stay exact
    assert felt_grad[0, 1] < 0 and felt_grad[0, 1] < 10 * plain_grad[0, 1]  # lean back, hard
    torch.testing.assert_close(felt_grad[1], plain_grad[1])  # no termination: as before
    felt = hopper.with_termination_gradient(True)
    negative = returns_and_gradient(felt, start_value=-50.0)[1]  # an early critic's guess
    plain_negative = returns_and_gradient(hopper, start_value=-50.0)[1]
    torch.testing.assert_close(negative, plain_negative)  # never a reward for falling


def test_objective_checks_shapes():
    task = Task.from_functions(lambda o, a, n: n.sum(-1))
    with pytest.raises(ValueError, match=r"\[B, H, A\]"):
        ModelObjective(_Integrator(), task, torch.zeros(1))(torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"\[S\]"):
        ModelObjective(_Integrator(), task, torch.zeros(2, 1))


TINY_BUDGET = {
    "shooting": dict(num_samples=8),
    "cem": dict(population=8, num_elites=2, iterations=1),
    "mppi": dict(num_samples=8, iterations=1),
    "grad": dict(num_candidates=4, iterations=1),
    "cem-grad": dict(population=8, num_elites=2, iterations=1, grad_steps=1),
}


@pytest.mark.parametrize("name", list(PLANNERS))
def test_a_proposal_seeds_the_search(name):
    """With a tiny budget, a good proposal (here the optimum) lifts the plan; with
    ``proposal_share=0`` it changes nothing."""
    proposal = OPTIMUM.expand(6, 2)
    plans = {
        label: planner(name, horizon=6, **TINY_BUDGET[name], proposal_share=share).plan(
            quadratic, proposal=given
        )
        for label, share, given in (
            ("without", 0.25, None),
            ("with", 0.25, proposal),
            ("ignored", 0.0, proposal),
        )
    }
    returns = {label: quadratic(plan[None]).item() for label, plan in plans.items()}
    assert returns["with"] > returns["without"] + 0.1, returns
    torch.testing.assert_close(plans["ignored"], plans["without"])
