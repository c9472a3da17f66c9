"""What every planner shares: bounds, normalised actions, warm start, the NaN rule and
whole-plan CUDA graphs.

Planners search in normalised action units ``u ∈ [-1, 1]`` and map to the env's
bounds with ``a = mid + half_range * u``, so step sizes and noise scales mean the
same for every environment.

On a GPU, eager planning is bound by kernel launches (thousands of small kernels per
plan). With ``cuda_graph=True`` a planner on CUDA captures one whole plan, every
iteration and every model step, as a single CUDA graph the first time it plans against
an objective, and replays it afterwards: only the warm start and the objective's start
observation change between replays, and both are copied into the graph's static inputs.
The objective's tensors (model weights, normaliser statistics, elites) are read where
they lie, so they must be updated in place (optimisers and ``load_state_dict`` do).
Every planner's ``_optimize`` is written without host synchronisation so it can be
captured; where capture fails the planner warns once and stays eager.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from dynaplan.errors import ConfigError
from dynaplan.types import Objective


def sanitize_returns(returns: Tensor) -> Tensor:
    """NaN and ±inf returns become -inf, so they can never be chosen."""
    return torch.where(torch.isfinite(returns), returns, torch.full_like(returns, -torch.inf))


def check_elites(population: int, num_elites: int) -> None:
    """Raise ConfigError unless ``2 <= num_elites <= population`` (CEM refits a std on them)."""
    if not 2 <= num_elites <= population:
        raise ConfigError(
            f"CEM needs 2 <= num_elites <= population, got {num_elites} elites of {population} "
            "(--search.num-elites, --search.population)"
        )


class PlannerBase:
    """Shared state of a planner; subclasses implement :meth:`_optimize`.

    Args:
        action_low, action_high: ``[A]`` bounds of the action space.
        horizon: ``H``, steps per planned sequence.
        seed: seeds the planner's own generator (same seed, same plans).
        device: where the search runs.
        cuda_graph: on CUDA, replay each plan as one captured CUDA graph (module docstring).
        proposal_share: share of each batch of candidates drawn around a proposal plan
            (a policy prior's), when ``plan`` gets one.
        proposal_noise: std of those draws in normalised units (one of them is exact).
    """

    def __init__(
        self,
        action_low: np.ndarray | Tensor,
        action_high: np.ndarray | Tensor,
        horizon: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        cuda_graph: bool = False,
        proposal_share: float = 0.25,
        proposal_noise: float = 0.1,
    ) -> None:
        if horizon <= 0:
            raise ConfigError(f"the planning horizon must be positive, got {horizon}")
        low = torch.as_tensor(action_low, dtype=torch.float32, device=device)
        high = torch.as_tensor(action_high, dtype=torch.float32, device=device)
        if low.ndim != 1 or low.shape != high.shape or not torch.all(low < high):
            raise ConfigError("action bounds must be 1-D, of equal shape, with low < high")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError("planners need finite action bounds")
        self.horizon, self.action_dim, self.device = horizon, low.numel(), torch.device(device)
        self._mid, self._half_range = (high + low) / 2, (high - low) / 2
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._previous: Tensor | None = None  # [H, A], normalised
        if not 0 <= proposal_share <= 1 or proposal_noise < 0:
            raise ConfigError("need proposal_share in [0, 1] and proposal_noise >= 0")
        self.proposal_share, self.proposal_noise = proposal_share, proposal_noise
        self._proposal: Tensor | None = None  # [H, A], normalised, during a plan only
        self.cuda_graph = cuda_graph and self.device.type == "cuda"
        self._graph: _CapturedPlan | None = None

    def reset(self) -> None:
        self._previous = None

    def plan(
        self, objective: Objective, steps_since_last_plan: int = 1, proposal: Tensor | None = None
    ) -> Tensor:
        """Best action sequence ``[H, A]`` in env units, warm-started from the last plan.

        ``proposal`` (``[H, A]``, env units), e.g. a policy prior's plan, seeds a share of
        the candidates.
        """
        start = self._warm_start(steps_since_last_plan)
        if proposal is not None:
            proposal = ((proposal - self._mid) / self._half_range).clamp(-1, 1)
        if self.cuda_graph:
            normalized = self._replay(objective, start, proposal)
        else:
            normalized = self._optimize_with(objective, start, proposal)
        self._previous = normalized.detach().clamp(-1, 1)
        return self._to_env(self._previous)

    def _optimize_with(
        self, objective: Objective, start: Tensor, proposal: Tensor | None
    ) -> Tensor:
        """``_optimize`` in normalised units, with ``proposal`` visible to ``_seed`` meanwhile."""
        self._proposal = proposal
        try:
            return self._optimize(lambda u: objective(self._to_env(u)), start)
        finally:
            self._proposal = None

    def _replay(self, objective: Objective, start: Tensor, proposal: Tensor | None) -> Tensor:
        """The plan from the CUDA graph captured for ``objective`` (captured on first use)."""
        graph = self._graph
        if (
            graph is None
            or graph.objective is not objective
            or (graph.proposal is None) != (proposal is None)
        ):
            try:
                self._graph = _CapturedPlan(self, objective, start, proposal)
            except Exception as exc:  # capture errors come from many layers (CUDA, autograd)
                warnings.warn(
                    f"capturing the plan as a CUDA graph failed ({type(exc).__name__}: {exc}); "
                    "planning continues eagerly (set cuda_graph=False to silence this)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self.cuda_graph, self._graph = False, None
                return self._optimize_with(objective, start, proposal)
        return self._graph.replay(start, proposal)

    def _seed(self, samples: Tensor) -> None:
        """In place: the last ``proposal_share`` of ``samples [N, H, A]`` (never row 0) become
        the proposal plus noise, the very last exactly the proposal; without one, nothing."""
        if self._proposal is None:
            return
        count = min(max(1, int(self.proposal_share * len(samples))), len(samples) - 1)
        if count <= 0 or self.proposal_share == 0:
            return
        noise = self.proposal_noise * self._normal(count)
        noise[-1] = 0.0
        samples[-count:] = (self._proposal + noise).clamp(-1, 1)

    def _optimize(self, objective: Objective, start: Tensor) -> Tensor:
        """Normalised ``[H, A]`` plan; ``objective`` takes normalised ``[B, H, A]``."""
        raise NotImplementedError

    def _to_env(self, normalized: Tensor) -> Tensor:
        return self._mid + self._half_range * normalized

    def _warm_start(self, shift: int) -> Tensor:
        """The previous plan shifted by ``shift`` steps, padded with zeros (mid-range)."""
        start = torch.zeros(self.horizon, self.action_dim, device=self.device)
        if self._previous is not None and shift < self.horizon:
            start[: self.horizon - shift] = self._previous[shift:]
        return start

    def _uniform(self, count: int) -> Tensor:
        """``count`` uniform normalised sequences ``[count, H, A]``."""
        shape = (count, self.horizon, self.action_dim)
        return torch.rand(shape, generator=self.generator, device=self.device) * 2 - 1

    def _normal(self, count: int) -> Tensor:
        shape = (count, self.horizon, self.action_dim)
        return torch.randn(shape, generator=self.generator, device=self.device)

    def state_dict(self) -> dict:
        return {"previous": self._previous, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the previous plan and the generator; a generator state saved on another
        device type (a run resumed off or onto a GPU) cannot be restored, and the generator
        stays as seeded."""
        previous = state["previous"]
        self._previous = None if previous is None else previous.to(self.device)
        generator_state = state["generator"]
        if generator_state.numel() == self.generator.get_state().numel():
            self.generator.set_state(generator_state)
        self._graph = None  # recapture from the restored generator state


class _CapturedPlan:
    """One planner's ``_optimize`` against one objective, captured as a CUDA graph.

    Warm-up runs on a side stream (as CUDA graph capture requires) and the generator state
    is restored afterwards, so the first replay draws the same random numbers as the first
    eager plan would; the generator is registered with the graph, so every replay draws
    fresh ones.
    """

    def __init__(
        self, planner: PlannerBase, objective: Objective, start: Tensor, proposal: Tensor | None
    ) -> None:
        self.objective = objective
        self.proposal = None if proposal is None else proposal.clone()
        self.start = start.clone()
        rng_state = planner.generator.get_state()
        side = torch.cuda.Stream(device=planner.device)
        side.wait_stream(torch.cuda.current_stream(planner.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                planner._optimize_with(objective, self.start, self.proposal)
        torch.cuda.current_stream(planner.device).wait_stream(side)
        planner.generator.set_state(rng_state)
        self.graph = torch.cuda.CUDAGraph()
        self.graph.register_generator_state(planner.generator)
        with torch.cuda.graph(self.graph):
            self.plan = planner._optimize_with(objective, self.start, self.proposal)

    def replay(self, start: Tensor, proposal: Tensor | None) -> Tensor:
        """The captured plan ``[H, A]`` (normalised) from warm start ``start [H, A]``."""
        self.start.copy_(start)
        if proposal is not None:
            self.proposal.copy_(proposal)
        self.graph.replay()
        return self.plan.clone()
