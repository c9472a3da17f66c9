"""Where runs execute: a local process pool (the default) or a Ray cluster.

Both backends call ``run_one`` once per run folder. ``run_one`` resumes a run from its last
checkpoint and skips a finished one, so a run that Ray retries after its worker died
continues where it stopped, and a sweep started again skips what is done. Ray does the
scheduling and retrying (Ray Tune's ASHA, optionally, the early stopping); results are the
run folders, written by the workers, so ``out`` must be a path every Ray node can write (a
shared filesystem on a cluster).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from dynaplan.agents.baselines import BaselineConfig, resume_baseline, run_baseline
from dynaplan.agents.mbpo import MBPOConfig, resume_mbpo, run_mbpo
from dynaplan.config import TrainConfig
from dynaplan.errors import ConfigError, DynaplanError
from dynaplan.loop import resume, train
from dynaplan.rundir import MetricsHook, RunDir

RunConfig = TrainConfig | BaselineConfig | MBPOConfig

RAY_INSTALL = "pip install 'dynaplan[ray]'"
ASHA_METRIC, ASHA_TIME = "eval_return_mean", "iteration"
"""ASHA compares runs by their evaluation return at the same iteration (metrics.csv columns)."""
ASHA_MAX_ITERATIONS = 1_000_000
"""ASHA's max_t: beyond any run's iterations, so no run is stopped for its length alone."""


class RunTask(NamedTuple):
    """One seed of one variant and the folder it runs in."""

    config: RunConfig
    run_dir: str


@dataclass
class Execution:
    """Where and how the runs of an experiment or sweep execute."""

    backend: Literal["local", "ray"] = "local"
    """local (a process pool on this machine) or ray (one Ray task per run)."""
    jobs: int = 2
    """local: runs in parallel, one process each (Ray packs runs by --cpus-per-run instead)."""
    address: str | None = None
    """ray: an existing cluster (auto, HOST:6379 or ray://HOST:10001); default starts one here."""
    cpus_per_run: float = 1.0
    """ray: CPUs each run requests."""
    gpus_per_run: float = 0.0
    """ray: GPUs each run requests; fractions share a GPU (0.25 = four runs per GPU)."""
    max_retries: int = 3
    """ray: times a run whose worker died is resumed from its last checkpoint."""
    scheduler: Literal["none", "asha"] = "none"
    """ray: none runs every run to its end; asha (Ray Tune) stops runs whose evaluation
    return trails the others' at the same iteration."""

    def validate(self) -> Execution:
        """Raise ConfigError on the first bad value; returns self."""
        if self.jobs <= 0:
            raise ConfigError(f"jobs must be positive, got {self.jobs}")
        if self.cpus_per_run <= 0 or self.gpus_per_run < 0 or self.max_retries < 0:
            raise ConfigError(
                "cpus_per_run must be positive and gpus_per_run, max_retries non-negative"
            )
        ray_only = self.address is not None or self.gpus_per_run > 0 or self.scheduler != "none"
        if self.backend == "local" and ray_only:
            raise ConfigError("--address, --gpus-per-run and --scheduler need --backend ray")
        return self


def run_one(config: RunConfig, run_dir: str, on_metrics: MetricsHook | None = None) -> str:
    """Run (or resume, or skip when finished) one seed of one variant; returns its folder.

    A folder whose run died before its first checkpoint holds nothing to resume (its
    journal is still empty), so that run starts again. ``on_metrics`` gets each new
    metrics row.
    """
    run = RunDir(run_dir)
    start, resume_run = RUNNERS[type(config)]
    if not run.checkpoint.exists():
        run.config.unlink(missing_ok=True)
        start(config, run_dir, on_metrics)
        return run_dir
    _check_same_settings(run, config)
    if not _finished(run, config):
        resume_run(run_dir, on_metrics)
    return run_dir


RERUN_MAY_CHANGE = ("device", "threads", "progress")
"""Fields in which a folder's run may differ from the one asked for: where and how visibly it
runs, not what it does."""


def _check_same_settings(run: RunDir, config: RunConfig) -> None:
    """Refuse a folder whose run was made with other settings than ``config`` (another budget,
    say): skipping or resuming it would report the old run as the one asked for."""
    saved = _as_json(type(config).load(run.config))  # a bad or other-kind file says so
    asked = _as_json(config)
    changed = sorted(
        key
        for key in saved.keys() | asked.keys()
        if key not in RERUN_MAY_CHANGE and saved.get(key) != asked.get(key)
    )
    if changed:
        raise ConfigError(
            f"{run.path} holds a run made with other settings ({', '.join(changed)}) than "
            "this one asks for; give another --out, or delete the folder to run it again"
        )


def _as_json(config: RunConfig) -> dict[str, Any]:
    """``config`` as its ``config.json`` holds it (enums as values, tuples as lists)."""
    return json.loads(json.dumps(config.to_dict()))


RUNNERS = {
    TrainConfig: (train, resume),
    BaselineConfig: (run_baseline, resume_baseline),
    MBPOConfig: (run_mbpo, resume_mbpo),
}
"""How each kind of run starts in a fresh folder and resumes from its checkpoint."""


def _finished(run: RunDir, config: RunConfig) -> bool:
    """All env steps are done, or an MBRL run stopped at its ``stop_at_return``."""
    rows = run.read_metrics()
    if not rows:
        return False
    target = getattr(config, "stop_at_return", None)
    solved = target is not None and rows[-1]["eval_return_mean"] >= target
    return rows[-1]["env_steps"] >= config.total_steps or solved


def run_all(tasks: Sequence[RunTask], execution: Execution) -> list[str]:
    """Run (or resume, or skip when finished) every task; returns their folders in order."""
    execution.validate()
    if execution.backend == "ray":
        with _on_ray(execution.address):
            run = _run_on_tune if execution.scheduler == "asha" else _run_on_ray
            return run(tasks, execution)
    with ProcessPoolExecutor(execution.jobs) as pool:
        futures = [pool.submit(run_one, task.config, task.run_dir) for task in tasks]
        return [future.result() for future in futures]


@contextmanager
def _on_ray(address: str | None) -> Iterator[None]:
    """Within this process's Ray connection (made and closed here if it has none yet).

    A run that fails on a worker with a DynaplanError raises that error here, unwrapped, so
    the command line reports it as one line.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"--backend ray needs Ray: {RAY_INSTALL}") from exc
    connected_here = not ray.is_initialized()
    if connected_here:
        ray.init(address=address)
    try:
        yield
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DynaplanError):
            raise exc.cause from None
        raise
    finally:
        if connected_here:
            ray.shutdown()


def _run_on_ray(tasks: Sequence[RunTask], execution: Execution) -> list[str]:
    """One Ray task per run; Ray retries a task whose worker died."""
    import ray

    remote = ray.remote(run_one).options(
        num_cpus=execution.cpus_per_run,
        num_gpus=execution.gpus_per_run,
        max_retries=execution.max_retries,
        retry_exceptions=False,
    )
    return ray.get([remote.remote(task.config, task.run_dir) for task in tasks])


def _run_on_tune(tasks: Sequence[RunTask], execution: Execution) -> list[str]:
    """One Ray Tune trial per run, stopped early by ASHA; Tune retries a failed trial."""
    try:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
    except ImportError as exc:
        raise ConfigError(f"--scheduler asha needs Ray Tune: {RAY_INSTALL}") from exc
    trainable = tune.with_resources(
        tune.with_parameters(_trial, tasks=list(tasks)),
        {"cpu": execution.cpus_per_run, "gpu": execution.gpus_per_run},
    )
    scheduler = ASHAScheduler(
        time_attr=ASHA_TIME, metric=ASHA_METRIC, mode="max", max_t=ASHA_MAX_ITERATIONS
    )
    with tempfile.TemporaryDirectory() as storage:  # the run folders hold the results
        results = tune.Tuner(
            trainable,
            param_space={"index": tune.grid_search(list(range(len(tasks))))},
            tune_config=tune.TuneConfig(scheduler=scheduler),
            run_config=tune.RunConfig(
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=execution.max_retries),
                verbose=0,
            ),
        ).fit()
    if results.errors:
        raise results.errors[0]
    return [task.run_dir for task in tasks]


def _trial(params: dict[str, int], tasks: list[RunTask]) -> None:
    from ray import tune

    task = tasks[params["index"]]
    run_one(task.config, task.run_dir, on_metrics=tune.report)
