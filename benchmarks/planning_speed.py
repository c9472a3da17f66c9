"""Milliseconds per MPC step for every planner: the speed issue's reference sizes and the presets.

    python benchmarks/planning_speed.py [--device cuda] [--repeats 5] [--modes eager compiled]

Reference sizes: an ensemble of 5 members, 4 hidden layers of 200, SiLU, on Hopper's
dimensions (11 + 3). Presets: the planner and model of ``dynaplan/presets/*.json``.
Every case runs in each of ``--modes``:

- ``eager``: plain PyTorch, the reference every ratio is taken against;
- ``compiled``: the rollout through torch.compile (``PlannerConfig.compile``);
- ``graph``: the whole plan captured as one CUDA graph (``PlannerConfig.cuda_graph``; CUDA only);
- ``graph-compiled``: both; ``graph-compiled-tf32`` / ``-bf16``: both, with TF32 matmuls or
  bf16 autocast (``PlannerConfig.precision``), whose effect on the predicted returns of 256
  random sequences is reported as ``tf32_return_rel_err`` / ``bf16_return_rel_err``;
- ``graph-autotuned-tf32`` / ``-bf16``: an experiment, not a dynaplan option: as
  ``graph-compiled-*``, with the rollout compiled in torch's ``max-autotune-no-cudagraphs``
  mode (Triton matmuls with the activation fused in, chosen by timing them).

``speedup`` is eager / the fastest other mode (the autotuned experiment aside), all from the
same run. Compilation is slow, so
``--compile-only`` can restrict the compiled modes to some cases. The ensemble forward
throughput is also measured against a plain ``baddbmm`` ensemble written here without project
code. Writes ``benchmarks/results/planning_speed[_cuda].json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dynaplan import tasks
from dynaplan.agents.factory import build_model
from dynaplan.config import load_preset
from dynaplan.envs import make_env
from dynaplan.models import DynamicsModel
from dynaplan.planners import ModelObjective, PlannerBase, make_planner
from dynaplan.planners import objective as planning_objective
from dynaplan.tasks import Task
from dynaplan.types import Precision, Propagation

RESULTS = Path(__file__).parent / "results"


@dataclass
class Case:
    planner: str
    horizon: int
    options: dict[str, Any]
    particles: int = 1
    propagation: Propagation = Propagation.EXPECTATION
    preset: str | None = None
    """Use this preset's env and model; None: the reference Hopper ensemble."""
    extra: dict[str, Any] = field(default_factory=dict)


REFERENCE_CASES = {
    "grad 40 candidates, H=10, 10 steps": Case("grad", 10, dict(num_candidates=40, iterations=10)),
    "grad 400 candidates, H=10, 10 steps": Case(
        "grad", 10, dict(num_candidates=400, iterations=10)
    ),
    "cem PETS size: pop 500, 20 particles, H=30, 5 iters": Case(
        "cem", 30, dict(population=500, num_elites=50, iterations=5), 20, Propagation.TSINF
    ),
    "mppi pop 500, H=30, 3 iters": Case("mppi", 30, dict(num_samples=500, iterations=3)),
    "shooting 1000, H=10": Case("shooting", 10, dict(num_samples=1000)),
    "cem-grad pop 200, H=10": Case(
        "cem-grad", 10, dict(population=200, num_elites=20, iterations=3)
    ),
}


def preset_cases() -> dict[str, Case]:
    cases = {}
    for name in ("pendulum", "hopper", "ant"):
        config = load_preset(name)
        search = config.search
        cases[f"preset {name}: {config.planner} {config.model} H={config.horizon}"] = Case(
            config.planner,
            config.horizon,
            search.options(config.planner),
            search.particles,
            search.propagation,
            preset=name,
        )
    return cases


def build(case: Case, device: torch.device) -> tuple[DynamicsModel, Task, torch.Tensor]:
    """The (untrained) model, task and a start state of a case."""
    if case.preset is None:
        torch.manual_seed(0)
        model = DynamicsModel(11, 3, ensemble_size=5, hidden_size=200, num_layers=4)
        env_id, env_kwargs = "Hopper-v5", {}
    else:
        config = load_preset(case.preset)
        env_id, env_kwargs = config.env, config.env_kwargs
        env = make_env(env_id, **env_kwargs)
        model = build_model(config, env.observation_space.shape[0], env.action_space.shape[0])
        env.close()
    env = make_env(env_id, **env_kwargs)
    start = torch.as_tensor(env.reset(seed=0)[0], dtype=torch.float32, device=device)
    task = tasks.get(env_id, env)
    low, high = env.action_space.low, env.action_space.high
    env.close()
    case.extra.update(low=low, high=high)
    return model.to(device).eval(), task, start


MODES = (
    "eager",
    "compiled",
    "graph",
    "graph-compiled",
    "graph-compiled-tf32",
    "graph-compiled-bf16",
    "graph-autotuned-tf32",
    "graph-autotuned-bf16",
)


def precision_of(mode: str) -> Precision:
    return Precision(mode.rsplit("-", 1)[1]) if mode.endswith(("tf32", "bf16")) else Precision.FP32


def objective_and_planner(
    case: Case, device: torch.device, mode: str
) -> tuple[ModelObjective, PlannerBase]:
    model, task, start = build(case, device)
    planner = make_planner(
        case.planner,
        case.extra["low"],
        case.extra["high"],
        case.horizon,
        device=device,
        cuda_graph=mode.startswith("graph"),
        **case.options,
    )
    objective = ModelObjective(
        model,
        task,
        start,
        particles=case.particles,
        propagation=case.propagation,
        generator=planner.generator,
        compiled="compiled" in mode or "autotuned" in mode,
        precision=precision_of(mode),
    )
    return objective, planner


def time_plans(case: Case, device: torch.device, mode: str, repeats: int) -> float:
    """Milliseconds per ``plan`` after warm-up plans (which include compilation and capture)."""
    torch._dynamo.reset()  # each case compiles afresh, never hitting the recompile limit
    objective, planner = objective_and_planner(case, device, mode)
    with compile_mode("max-autotune-no-cudagraphs" if "autotuned" in mode else None, device):
        for _ in range(3 if mode != "eager" else 1):
            planner.plan(objective)
        if mode.startswith("graph") and not planner.cuda_graph:
            raise RuntimeError("the plan could not be captured (see the warning above)")
        synchronize(device)
        began = time.perf_counter()
        for _ in range(repeats):
            planner.plan(objective)
        synchronize(device)
    return 1000 * (time.perf_counter() - began) / repeats


@contextlib.contextmanager
def compile_mode(mode: str | None, device: torch.device) -> Iterator[None]:
    """Inside the block the planning rollout compiles in torch.compile's ``mode`` (None: as
    dynaplan does)."""
    if mode is None:
        yield
        return
    saved = planning_objective._COMPILED.pop(device.type, None)
    planning_objective._COMPILED[device.type] = torch.compile(
        planning_objective.rollout_returns, dynamic=False, mode=mode
    )
    try:
        yield
    finally:
        planning_objective._COMPILED.pop(device.type)
        if saved is not None:
            planning_objective._COMPILED[device.type] = saved


def return_error(case: Case, device: torch.device, precision: Precision) -> float:
    """Largest change of predicted returns in ``precision`` vs fp32, relative to the largest
    return, over 256 random sequences (untrained model: a pessimistic, chaotic case)."""
    objective, planner = objective_and_planner(case, device, "eager")
    actions = planner._to_env(planner._uniform(256))
    returns = []
    for objective.precision in (Precision.FP32, precision):
        planner.generator.manual_seed(0)  # the same model noise in both
        with torch.inference_mode():
            returns.append(objective(actions))
    exact, fast = returns
    return ((fast - exact).abs().max() / exact.abs().max().clamp_min(1e-8)).item()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_throughput(device: torch.device, rows: int = 5000, repeats: int = 20) -> dict:
    """Member-rows per second of one ensemble forward: dynaplan's model vs plain baddbmm."""
    torch.manual_seed(0)
    model = DynamicsModel(11, 3, ensemble_size=5, hidden_size=200, num_layers=4).to(device).eval()
    x = torch.randn(5, rows, 14, device=device)
    sizes = [14, 200, 200, 200, 200, 11]
    weights = [torch.randn(5, i, o, device=device) / i**0.5 for i, o in itertools.pairwise(sizes)]
    biases = [torch.zeros(5, 1, o, device=device) for o in sizes[1:]]

    def reference(h: torch.Tensor) -> torch.Tensor:
        for k, (w, b) in enumerate(zip(weights, biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            h = torch.nn.functional.silu(h) if k < len(weights) - 1 else h
        return h

    def rate(forward) -> float:
        with torch.inference_mode():
            forward(x)
            synchronize(device)
            began = time.perf_counter()
            for _ in range(repeats):
                forward(x)
            synchronize(device)
        return 5 * rows * repeats / (time.perf_counter() - began)

    ours, plain = rate(lambda h: model(h)[0]), rate(reference)
    return {"dynaplan_rows_per_s": ours, "plain_baddbmm_rows_per_s": plain, "ratio": ours / plain}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["eager", "compiled"])
    parser.add_argument(
        "--compile-only",
        nargs="*",
        default=None,
        help="run the compiled modes only for cases whose label contains one of these",
    )
    parser.add_argument(
        "--only",
        default="",
        help="rerun only cases whose label contains this (other cases and modes are kept)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    throughput = forward_throughput(device)
    print(
        f"ensemble forward: {throughput['dynaplan_rows_per_s'] / 1e6:.2f} M member-rows/s "
        f"(plain baddbmm {throughput['plain_baddbmm_rows_per_s'] / 1e6:.2f} M)"
    )
    cases = {
        label: case
        for label, case in {**REFERENCE_CASES, **preset_cases()}.items()
        if args.only in label
    }
    rows = {label: {"case": label, "planner": case.planner} for label, case in cases.items()}
    # modes outside, cases inside: the fast modes cover every case before any slow compilation
    for mode in args.modes:
        for label, case in cases.items():
            compile_case = args.compile_only is None or any(k in label for k in args.compile_only)
            if "compiled" in mode and not compile_case:
                continue
            row = rows[label]
            try:
                row[f"{mode}_ms"] = round(time_plans(case, device, mode, args.repeats), 2)
            except Exception as exc:  # report and go on: one broken mode must not cost the run
                row[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
            precision = precision_of(mode)
            if precision != Precision.FP32:
                row[f"{precision}_return_rel_err"] = return_error(case, device, precision)
            print(f"{label:<60} {mode:<20} {row.get(f'{mode}_ms', 'failed')}", flush=True)
            write(list(rows.values()), args, device, throughput)  # a killed run keeps its rows


def write(rows: list[dict], args: argparse.Namespace, device: torch.device, throughput: dict):
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"planning_speed{'_cuda' if device.type == 'cuda' else ''}.json"
    if args.only and out.exists():  # keep earlier rows and the earlier modes of rerun cases
        merged = {row["case"]: row for row in json.loads(out.read_text())["results"]}
        for row in rows:
            merged[row["case"]] = {**merged.get(row["case"], {}), **row}
        rows = list(merged.values())
    for row in rows:
        others = [  # dynaplan's own modes: the autotuned experiment is reported apart
            v
            for k, v in row.items()
            if k.endswith("_ms") and k != "eager_ms" and "autotuned" not in k
        ]
        if "eager_ms" in row and others:
            row["speedup"] = round(row["eager_ms"] / min(others), 2)
    summary = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "threads": args.threads,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "modes": args.modes,
        "ensemble_forward": throughput,
        "results": rows,
    }
    out.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
