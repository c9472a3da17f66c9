"""The run folder: config, metrics, transition journal, checkpoint and plots in one place.

Checkpoints are written atomically (temp file + rename) and read with
``torch.load(weights_only=True)``, so a run folder cannot execute code when loaded. One
process at a time writes a run folder: training and resuming hold its lock file
(``with run:``), which the OS drops when that process ends, a kill included. A run trained
with ``snapshots`` also keeps the checkpoint of every evaluated controller under
``snapshots/`` (hard links to the checkpoint file that each rename leaves behind, so no copy).
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from filelock import FileLock, Timeout

from dynaplan.config import read_config_file
from dynaplan.errors import CheckpointError, ConfigError

C = TypeVar("C")

METRIC_COLUMNS = (
    "iteration",
    "env_steps",
    "eval_return_mean",
    "eval_return_std",
    "eval_length_mean",
    "train_return",
    "episodes",
    "model_train_loss",
    "model_val_loss",
    "value_loss",
    "policy_return",
    "policy_kept_previous",
    "policy_check_return",
    "policy_eval_return",
    "policy_alpha",
    "policy_entropy",
    "plan_ms_per_step",
    "model_fit_s",
    "value_fit_s",
    "policy_fit_s",
    "eval_s",
    "wall_s",
)

MetricsHook = Callable[[dict[str, float]], None]
"""Called with each evaluated metrics row as a run writes it."""


def last_evaluation(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The last row with an evaluation return (rows between evaluations hold NaN), or None."""
    evaluated = [row for row in rows if math.isfinite(row["eval_return_mean"])]
    return evaluated[-1] if evaluated else None


class RunDir:
    """Paths and safe reads/writes of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.csv"
        self.checkpoint = self.path / "checkpoint.pt"
        self.snapshots = self.path / "snapshots"
        self.journal = self.path / "transitions.bin"
        self.model = self.path / "model.pt"
        self.plot = self.path / "learning_curve.png"
        self._writer_lock = FileLock(self.path / "run.lock", timeout=0)

    def __enter__(self) -> RunDir:
        """Take the folder's writer lock; a second process that tries gets a CheckpointError."""
        try:
            self._writer_lock.acquire()
        except Timeout:
            raise CheckpointError(
                f"{self.path} is in use: another process is training or resuming this run "
                f"(it holds {self._writer_lock.lock_file}); wait for it to finish or stop it, "
                f"then continue with --resume {self.path}"
            ) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer_lock.release()

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """A new run folder; refuses one that already holds a run."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise CheckpointError(f"{run.path} is a file, not a folder; choose another --out")
        if run.config.exists():
            raise CheckpointError(
                f"{run.path} already holds a run; continue it with --resume {run.path} "
                "or choose another --out"
            )
        run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run folder with a config and a checkpoint."""
        run = cls(path)
        if not run.path.is_dir():
            raise CheckpointError(f"no run folder at {run.path}; check the path")
        if not run.config.is_file():
            raise CheckpointError(f"{run.path} has no config.json: it is not a run folder")
        if not run.checkpoint.is_file():
            raise CheckpointError(
                f"{run.path} has no checkpoint.pt: its run has not reached its first "
                "checkpoint, so there is nothing to resume or evaluate yet; if it is not still "
                "running, delete the folder to start that run again"
            )
        return run

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint.with_name(self.checkpoint.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint)

    def load_checkpoint(
        self, device: torch.device | str = "cpu", at_steps: int | None = None
    ) -> dict[str, Any]:
        """The last checkpoint, or with ``at_steps`` the snapshot taken at that many env steps."""
        path = self.checkpoint if at_steps is None else self._snapshot_to_load(at_steps)
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # any unpickling failure means the file is unusable
            raise CheckpointError(
                f"{path} is corrupt or not a dynaplan checkpoint ({exc}); "
                "start a new run with --out"
            ) from exc

    def snapshot(self, env_steps: int) -> Path:
        """Keep the current checkpoint as the snapshot at ``env_steps`` (replacing one of that
        name); a hard link, or a copy where links fail. Each keeps its checkpoint's disk space."""
        self.snapshots.mkdir(exist_ok=True)
        path = self._snapshot_path(env_steps)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.checkpoint, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(self.checkpoint, tmp)
        os.replace(tmp, path)
        return path

    def snapshot_steps(self) -> list[int]:
        """Env steps of the snapshots in this folder, ascending."""
        found = (re.fullmatch(r"step_(\d+)\.pt", p.name) for p in self.snapshots.glob("*.pt"))
        return sorted(int(m.group(1)) for m in found if m)

    def _snapshot_path(self, env_steps: int) -> Path:
        return self.snapshots / f"step_{env_steps:07d}.pt"

    def _snapshot_to_load(self, env_steps: int) -> Path:
        path = self._snapshot_path(env_steps)
        if path.is_file():
            return path
        steps = self.snapshot_steps()
        if not steps:
            raise CheckpointError(
                f"{self.path} has no snapshots; only runs trained with --snapshots keep the "
                "checkpoint of each evaluation"
            )
        raise CheckpointError(
            f"{self.path} has no snapshot at {env_steps} env steps; it has "
            f"{', '.join(map(str, steps))}"
        )

    def append_metrics(self, row: dict[str, float]) -> None:
        if self.metrics.exists() and self._metrics_header() != list(METRIC_COLUMNS):
            # a run begun by an older version: its rows under today's columns (the new ones
            # empty), so the file stays one table
            self._rewrite_metrics(self._metric_cells())
        new = not self.metrics.exists()
        with open(self.metrics, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _metrics_header(self) -> list[str]:
        with open(self.metrics, newline="") as f:
            return next(csv.reader(f), [])

    def _metric_cells(self) -> list[dict[str, str]]:
        """The rows of ``metrics.csv`` as written (text cells)."""
        with open(self.metrics, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite_metrics(self, rows: list[dict[str, str]]) -> None:
        """Replace ``metrics.csv`` by ``rows`` under today's columns, atomically: a kill
        meanwhile leaves the old file, never a partial one."""
        tmp = self.metrics.with_name(self.metrics.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.metrics)

    def read_metrics(self) -> list[dict[str, float]]:
        return read_metrics(self.metrics)

    def copy_metrics_from(self, source: RunDir, up_to_iteration: int) -> None:
        """Write ``source``'s complete metrics rows up to ``up_to_iteration`` as this run's
        (a row its writer is still appending is left out)."""
        if source.metrics.exists():
            rows = source._metric_cells()
            complete = [r for r in rows if None not in r.values() and None not in r]
            self._rewrite_metrics([r for r in complete if float(r["iteration"]) <= up_to_iteration])

    def check_metrics(self, iteration: int) -> None:
        """Raise ConfigError where ``metrics.csv`` cannot go on from ``iteration`` rows: missing
        after the first iteration, or garbled (resuming would lose its rows in silence)."""
        if self.metrics.exists():
            read_metrics(self.metrics)
        elif iteration >= 1:
            raise ConfigError(
                f"{self.metrics} is missing, but the checkpoint has {iteration} iteration(s) "
                "of metrics; restore the file from a copy before resuming"
            )

    def keep_metrics_up_to(self, iteration: int) -> None:
        """Drop rows after ``iteration`` (written after the checkpoint of a killed run), once
        :meth:`check_metrics` has passed."""
        self.check_metrics(iteration)
        if self.metrics.exists():
            kept = [r for r in self._metric_cells() if float(r["iteration"]) <= iteration]
            self._rewrite_metrics(kept)


def load_for_resume(
    run: RunDir, load_config: Callable[[Path], C], kind: str
) -> tuple[C, dict[str, Any]]:
    """The config (``load_config`` reads and validates it) and last checkpoint of a run
    folder of ``kind``; a folder of another kind or with a bad config is a CheckpointError."""
    try:
        config = load_config(run.config)
    except (ConfigError, ValueError) as exc:
        raise CheckpointError(f"{run.config} cannot be resumed as a {kind!r} run: {exc}") from exc
    checkpoint = run.load_checkpoint()
    if checkpoint.get("kind") != kind:
        raise CheckpointError(f"{run.checkpoint} is not the checkpoint of a {kind!r} run")
    return config, checkpoint


def run_kind(run_dir: str | Path) -> str | None:
    """The ``kind`` a run folder's ``config.json`` declares (None for MBRL runs and non-runs)."""
    config = RunDir(run_dir).config
    return read_config_file(config).get("kind") if config.is_file() else None


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as floats (empty cells become NaN)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    try:
        return [
            {key: float(value) if value != "" else math.nan for key, value in row.items()}
            for row in rows
        ]
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(
            f"{path} is not a dynaplan metrics table ({exc}); restore it from a copy (a resumed "
            "run rewrites only its own rows)"
        ) from None
