"""Sweeps: a grid and/or random search over config fields × seeds, then the comparison.

A sweep file (YAML) names a base config and the fields to vary, by dotted path::

    base: pendulum             # a preset, or a config dict (which may name a preset)
    grid:                      # every combination
      horizon: [1, 5, 10]
      planner: [grad, cem]
    random:                    # `samples` draws, each combined with every grid point
      samples: 4
      seed: 0
      fields:
        search.lr: {low: 0.01, high: 1.0, log: true}
        dynamics.hidden_size: [64, 128, 200]
    seeds: 3
    out: runs/sweep-horizon

Each variant's label (``horizon=5,search.lr=0.1``) is its folder under ``OUT/runs`` and its
group in ``OUT/compare``. Runs go through ``execution.run_all``, so a sweep started again
resumes unfinished runs and skips finished ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dynaplan.analysis.compare import Comparison, compare
from dynaplan.config import TrainConfig, config_from_dict, load_preset
from dynaplan.errors import ConfigError
from dynaplan.execution import Execution, RunTask, run_all

BASE_LABEL = "base"
"""The one variant's folder when nothing is swept (seeds only)."""


@dataclass(frozen=True)
class Range:
    """Uniform (or log-uniform) values in [low, high]; integers when both ends are."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(
                f"a range needs low < high (and low > 0 with log), got {self.low}, {self.high}"
            )

    def sample(self, rng: np.random.Generator) -> float | int:
        """One value; floats are rounded to 4 significant digits so labels name them exactly."""
        low, high = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        value = rng.uniform(low, high)
        value = math.exp(value) if self.log else value
        if isinstance(self.low, int) and isinstance(self.high, int):
            return round(value)
        return float(f"{value:.4g}")


Values = list[Any] | Range
"""A random field's choices (drawn uniformly) or range."""


@dataclass
class Sweep:
    """A base config, the fields to vary, and the seeds of every variant."""

    base: TrainConfig
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Dotted field -> values; every combination is a variant."""
    random: dict[str, Values] = field(default_factory=dict)
    """Dotted field -> choices or Range, drawn ``samples`` times per grid point."""
    samples: int = 0
    """Random draws (needed with ``random``)."""
    sample_seed: int = 0
    """Seeds the random draws, so the same sweep file gives the same variants."""
    seeds: int = 1
    """Seeds per variant (0 .. seeds-1)."""
    out: str | None = None
    """Output folder (runs/ and compare/ inside)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        """From a sweep file's dict (see the module docstring); bad keys are ConfigErrors."""
        data = dict(data)
        random = dict(data.pop("random", None) or {})
        try:
            sweep = cls(
                base=_base_config(data.pop("base", None)),
                grid=dict(data.pop("grid", None) or {}),
                random={
                    name: Range(**values) if isinstance(values, dict) else values
                    for name, values in (random.pop("fields", None) or {}).items()
                },
                samples=random.pop("samples", 0),
                sample_seed=random.pop("seed", 0),
                seeds=data.pop("seeds", 1),
                out=data.pop("out", None),
            )
        except TypeError as exc:
            raise ConfigError(f"bad random range in the sweep: {exc}") from exc
        unknown = sorted(data) + [f"random.{key}" for key in sorted(random)]
        if unknown:
            raise ConfigError(
                f"unknown sweep keys {unknown}; use base, grid, random (samples, seed, fields), "
                "seeds and out"
            )
        return sweep

    def variants(self) -> dict[str, TrainConfig]:
        """Label -> validated config of every grid point × random draw (duplicates once)."""
        if self.seeds <= 0:
            raise ConfigError(f"seeds must be positive, got {self.seeds}")
        if bool(self.random) != (self.samples > 0):
            raise ConfigError("a random search needs both random.fields and random.samples > 0")
        both = sorted(set(self.grid) & set(self.random))
        if both:
            raise ConfigError(f"{both} are in both grid and random; sweep each field once")
        for name, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{name} must be a non-empty list of values")
        if not self.grid and not self.random:
            return {BASE_LABEL: self.base.validate()}
        rng = np.random.default_rng(self.sample_seed)
        draws = [
            {name: _draw(name, values, rng) for name, values in self.random.items()}
            for _ in range(self.samples)
        ] or [{}]
        variants = {}
        for point in itertools.product(*self.grid.values()):
            for draw in draws:
                changes = {**dict(zip(self.grid, point, strict=True)), **draw}
                label = ",".join(f"{name}={value}" for name, value in changes.items())
                variants[label] = self.base.with_fields({**changes, "label": label}).validate()
        return variants


def _base_config(base: str | dict[str, Any] | None) -> TrainConfig:
    """A preset name, or a config dict whose optional ``preset`` it starts from."""
    if base is None or isinstance(base, str):
        return load_preset(base) if base else TrainConfig()
    if not isinstance(base, dict):
        raise ConfigError(f"base must be a preset name or a config mapping, got {base!r}")
    return config_from_dict(base)


def _draw(name: str, values: Values, rng: np.random.Generator) -> Any:
    if isinstance(values, Range):
        return values.sample(rng)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"random.fields.{name} must be a list of choices or {{low, high}}")
    return values[rng.integers(len(values))]


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a float, as YAML 1.2 does (PyYAML's 1.1 gives a str)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """A YAML document or value (``0.1``, ``1e-3``, ``cem``, ``[1, 5]``) as Python data."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain data only


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["horizon=5", "value.enabled=false"]`` -> ``{"horizon": 5, "value.enabled": False}``."""
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"changes take FIELD=VALUE (e.g. horizon=5), got {item!r}")
        changes[name.strip()] = parse_yaml(value)
    return changes


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep file's contents as a dict (pass it to ``Sweep.from_dict``)."""
    try:
        data = parse_yaml(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the sweep file {path} ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with base, grid, random, seeds, out")
    return data


def run_sweep(sweep: Sweep, out: str | Path, execution: Execution | None = None) -> Comparison:
    """Every variant × seed of ``sweep`` (default: 2 local processes), then the comparison."""
    variants = sweep.variants()
    out = Path(out)
    tasks = [
        RunTask(
            dataclasses.replace(config, seed=seed, progress=False),
            str(_variant_dir(out, label) / f"seed_{seed}"),
        )
        for label, config in variants.items()
        for seed in range(sweep.seeds)
    ]
    run_all(tasks, execution or Execution())
    return compare(
        [str(_variant_dir(out, label) / "seed_*") for label in variants], out / "compare"
    )


def _variant_dir(out: Path, label: str) -> Path:
    return out / "runs" / label.replace("/", "_")
