import warnings

import pytest
import torch

from dynaplan import tasks
from dynaplan.envs import POINT_MASS_ID, make_env
from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective, objective
from dynaplan.types import Precision

TOLERANCE = dict(rtol=1e-4, atol=1e-5)
"""fp32 compiled vs fp32 eager: same maths, fused kernels may reorder sums."""


def make_objective(compiled: bool, model: DynamicsModel, start: torch.Tensor, **kwargs):
    task = tasks.get(POINT_MASS_ID)
    return ModelObjective(model, task, start, gamma=0.95, compiled=compiled, **kwargs)


def test_compiled_rollout_matches_eager_values_and_gradients():
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, ensemble_size=3, hidden_size=32, num_layers=2).eval()
    start = torch.tensor([0.7, -0.4])
    actions = torch.rand(8, 4, 2) * 2 - 1
    results = []
    for compiled in (False, True):
        candidates = actions.clone().requires_grad_(True)
        returns = make_objective(compiled, model, start)(candidates)
        returns.sum().backward()
        results.append((returns.detach(), candidates.grad))
    (eager, eager_grad), (fast, fast_grad) = results
    torch.testing.assert_close(fast, eager, **TOLERANCE)
    torch.testing.assert_close(fast_grad, eager_grad, **TOLERANCE)


def test_the_compiled_termination_gradient_matches_eager():
    env = make_env("Hopper-v5")
    hopper = tasks.get("Hopper-v5", env)
    env.close()
    torch.manual_seed(0)
    model = DynamicsModel(11, 3, hidden_size=32, num_layers=2).eval()
    start = torch.zeros(11)
    start[0] = 0.76  # just above the lowest healthy z, 0.7: some rollouts fall below it
    actions = torch.rand(16, 4, 3) * 2 - 1
    value = torch.nn.Linear(11, 1)
    results = []
    for task, compiled in ((hopper, False), (hopper.with_termination_gradient(True), False),
                           (hopper.with_termination_gradient(True), True)):  # fmt: skip
        candidates = actions.clone().requires_grad_(True)
        objective = ModelObjective(
            model, task, start, compiled=compiled, terminal_value=lambda s: 100 + value(s)[:, 0]
        )
        returns = objective(candidates)
        returns.sum().backward()
        results.append((returns.detach(), candidates.grad))
    (plain, plain_grad), (eager, eager_grad), (fast, fast_grad) = results
    torch.testing.assert_close(eager, plain)  # the returns stay exact
    assert not torch.allclose(eager_grad, plain_grad)  # some rollouts terminate
    torch.testing.assert_close(fast, eager, **TOLERANCE)
    torch.testing.assert_close(fast_grad, eager_grad, **TOLERANCE)


class RecordingValue(torch.nn.Module):
    """A terminal value that records whether any weight required grad while it ran."""

    def __init__(self, model: DynamicsModel) -> None:
        super().__init__()
        self.scale, self.model, self.seen = torch.nn.Parameter(torch.ones(())), model, []

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        weights = [self.scale, *self.model.parameters()]
        self.seen.append(any(w.requires_grad for w in weights))
        return self.scale * obs.sum(-1)


@pytest.mark.parametrize("compiled", [False, True])
def test_planning_differentiates_only_in_the_actions(compiled):
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, ensemble_size=2, hidden_size=16, num_layers=1).eval()
    value = RecordingValue(model)
    candidates = (torch.rand(4, 3, 2) * 2 - 1).requires_grad_(True)
    objective = make_objective(compiled, model, torch.zeros(2), terminal_value=value)
    objective(candidates).sum().backward()
    assert value.seen and not any(value.seen)  # frozen while planning (compiled: while tracing)
    assert candidates.grad is not None and torch.isfinite(candidates.grad).all()
    assert all(w.requires_grad and w.grad is None for w in value.parameters())


def test_a_failing_compilation_warns_once_and_plans_eagerly(monkeypatch):
    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setitem(objective._COMPILED, "cpu", broken)
    model = DynamicsModel(2, 2, hidden_size=16, num_layers=1).eval()
    start, actions = torch.zeros(2), torch.zeros(3, 2, 2)
    fallback = make_objective(True, model, start)
    with pytest.warns(RuntimeWarning, match="planning continues eagerly"):
        returns = fallback(actions)
    torch.testing.assert_close(returns, make_objective(False, model, start)(actions))
    assert objective._COMPILED["cpu"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fallback(actions)  # warned once already


def test_reduced_precision_stays_close_to_fp32_and_keeps_returns_fp32():
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, ensemble_size=3, hidden_size=32, num_layers=2).eval()
    start, actions = torch.tensor([0.7, -0.4]), torch.rand(8, 4, 2) * 2 - 1
    exact = make_objective(False, model, start)(actions)
    for precision, tolerance in ((Precision.TF32, 0.0), (Precision.BF16, 2e-2)):
        candidates = actions.clone().requires_grad_(True)
        returns = make_objective(False, model, start, precision=precision)(candidates)
        assert returns.dtype == torch.float32
        torch.testing.assert_close(returns.detach(), exact, rtol=tolerance, atol=tolerance)
        (grad,) = torch.autograd.grad(returns.sum(), candidates)
        assert torch.isfinite(grad).all()
    with pytest.raises(ValueError, match="fp16"):
        make_objective(False, model, start, precision="fp16")


def test_the_disagreement_penalty_is_linear_in_lambda_and_needs_expectation():
    torch.manual_seed(0)
    model = DynamicsModel(2, 2, ensemble_size=3, hidden_size=32, num_layers=2).eval()
    start, actions = torch.tensor([0.7, -0.4]), torch.rand(8, 4, 2) * 2 - 1
    returns = [
        make_objective(False, model, start, disagreement_penalty=penalty)(actions)
        for penalty in (0.0, 0.5, 1.0)
    ]
    assert (returns[1] < returns[0]).all()
    torch.testing.assert_close(returns[0] - returns[2], 2 * (returns[0] - returns[1]))
    with pytest.raises(ValueError, match="expectation"):
        make_objective(False, model, start, disagreement_penalty=1.0, propagation="tsinf")
