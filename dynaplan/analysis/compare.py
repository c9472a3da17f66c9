"""Comparing runs across seeds: learning curves with bootstrap CIs, returns at budgets, each
seed's mean return over a window of env steps, and env steps to reach a return threshold.

Runs are grouped by the ``label`` in their ``config.json`` or one derived from it
(``mbrl grad mlp H10 5 Adam steps``, ``ppo``, ``ppo zoo``, ``zero``, ...); each run of a
group counts as one seed. A run with a policy prior also counts in a group ``LABEL: prior
alone``, from its evaluations of the prior acting without planning. Confidence intervals are
percentile bootstraps of the mean over seeds (2000 resamples, fixed seed), so the same runs
always give the same figures.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from dynaplan.config import PolicyConfig, ValueConfig
from dynaplan.errors import ConfigError
from dynaplan.rundir import RunDir

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass
class Run:
    """One run folder's evaluations."""

    path: Path
    label: str
    env: str
    seed: int
    steps: np.ndarray  # [N] env steps of the evaluations, increasing
    returns: np.ndarray  # [N] mean evaluation return at those steps
    finished: bool = True
    """It reached its total_steps or its stop_at_return; otherwise (killed, or still running)
    it has no return at budgets past the env steps it collected."""
    collected: float | None = None
    """Env steps in its last metrics row, evaluated or not (default: its last evaluation's)."""

    def stopped_short_of(self, env_steps: float) -> bool:
        """Whether the run is unfinished and has not collected ``env_steps`` yet, so it has no
        return there (it was killed, or it is still running)."""
        end = self.steps[-1] if self.collected is None else self.collected
        return env_steps > end and not self.finished

    def return_at(self, budget: float) -> float:
        """The last evaluation at or before ``budget`` env steps; NaN if there is none yet, or
        if an unfinished run stopped short of ``budget``."""
        if self.stopped_short_of(budget):
            return math.nan
        before = np.flatnonzero(self.steps <= budget)
        return float(self.returns[before[-1]]) if len(before) else math.nan

    def mean_over(self, start: float, end: float) -> float:
        """Mean of the evaluations at env steps in ``[start, end]``: steadier than one
        evaluation at a budget where curves swing. A finished run that ended before ``start``
        (one stopped at its target return) counts its last evaluation, as at a budget; NaN if
        an unfinished run has not collected ``end`` env steps yet, or there is no evaluation."""
        if self.stopped_short_of(end):
            return math.nan
        if self.finished and self.steps[-1] < start:
            return float(self.returns[-1])
        inside = (self.steps >= start) & (self.steps <= end)
        return float(self.returns[inside].mean()) if inside.any() else math.nan

    def steps_to_reach(self, threshold: float) -> int | None:
        """Env steps of the first evaluation whose return reaches ``threshold``."""
        hits = np.flatnonzero(self.returns >= threshold)
        return int(self.steps[hits[0]]) if len(hits) else None


@dataclass
class Band:
    """Mean over seeds with a bootstrap CI, on a common step grid."""

    steps: np.ndarray  # [G]
    mean: np.ndarray  # [G]
    low: np.ndarray  # [G]
    high: np.ndarray  # [G]


@dataclass
class SeedStats:
    """Mean ± std over a group's seeds with a bootstrap CI of the mean; ``n``: the seeds that
    have a value."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    @staticmethod
    def fields_of(values: np.ndarray) -> dict[str, float]:
        """The fields for ``values: [N]`` (one per seed, NaN where a seed has none)."""
        values = values[np.isfinite(values)]
        if not len(values):
            return dict(n=0, mean=math.nan, std=math.nan, ci_low=math.nan, ci_high=math.nan)
        low, high = bootstrap_ci(values[:, None])
        return dict(
            n=len(values),
            mean=float(values.mean()),
            std=float(values.std()),
            ci_low=float(low[0]),
            ci_high=float(high[0]),
        )


@dataclass
class BudgetStats(SeedStats):
    """Returns of a group's seeds at one budget of env steps."""

    budget: int


@dataclass
class WindowStats(SeedStats):
    """Each seed's mean evaluation return over env steps ``[start, end]``, over the seeds."""

    start: int
    end: int


@dataclass
class ThresholdStats:
    """Env steps to first reach the threshold, over the seeds that reached it."""

    threshold: float
    reached: int
    n: int
    median: float
    q25: float
    q75: float


@dataclass
class GroupSummary:
    label: str
    runs: list[Run]
    budgets: list[BudgetStats]
    threshold: ThresholdStats | None
    notes: list[str] = field(default_factory=list)
    window: WindowStats | None = None

    @property
    def seeds(self) -> list[int]:
        return [run.seed for run in self.runs]


@dataclass
class Comparison:
    summaries: list[GroupSummary]
    files: list[Path]
    skipped: list[str]


def run_label(config: dict[str, Any]) -> str:
    """The group a run belongs to, from its ``config.json`` (the seed is not part of it)."""
    if config.get("label"):
        return str(config["label"])
    if config.get("kind") == "baseline":
        preset, init = config.get("preset", "default"), config.get("init")
        label = str(config["algo"]) + ("" if preset == "default" else f" {preset}")
        return label + (f" from {Path(init).name}" if init else "")
    if "planner" in config:
        label = f"mbrl {config['planner']} {config.get('model', '?')} H{config.get('horizon', '?')}"
        search = config.get("search", {})
        if (steps := search.get("iterations")) is not None:  # how hard each plan optimises
            unit = "Adam step" if config["planner"] == "grad" else "iteration"
            label += f" {steps} {unit}" + ("" if steps == 1 else "s")
        if margin := search.get("safety_margin"):
            label += f" margin {margin:g}"
        if (upright := search.get("min_upright")) is not None:
            label += f" upright {upright:g}"
        if search.get("termination_gradient"):
            label += " termination gradient"
        value = config.get("value", {})
        if value.get("enabled"):
            label += " + lqr value" if value.get("kind") == "lqr" else " + value"
            if (gamma := value.get("gamma", ValueConfig.gamma)) != ValueConfig.gamma:
                label += f" (gamma {gamma:g})"
        policy = config.get("policy", {})
        if policy.get("enabled"):
            own_horizon = policy.get("horizon")  # trained over its own horizon, not the plan's
            notes = [f"H{own_horizon}"] if own_horizon not in (None, config.get("horizon")) else []
            if (gamma := policy.get("gamma", PolicyConfig.gamma)) != PolicyConfig.gamma:
                notes.append(f"gamma {gamma:g}")
            if policy.get("collect"):
                notes.append("collects")
            if check := policy.get("check_horizon"):
                tolerance = policy.get("check_tolerance", PolicyConfig.check_tolerance)
                best = " against the best" if policy.get("check_against_best") else ""
                default = tolerance == PolicyConfig.check_tolerance
                within = "" if default else f" within {tolerance:g}"
                notes.append(f"checked {check}{best}{within}")
            if margin := policy.get("safety_margin"):
                notes.append(f"margin {margin:g}")
            if (upright := policy.get("min_upright")) is not None:
                notes.append(f"upright {upright:g}")
            if policy.get("termination_gradient"):
                notes.append("termination gradient")
            label += " + policy" + (f" ({', '.join(notes)})" if notes else "")
        if (upright := config.get("reset_below_upright")) is not None:
            label += f"; resets below upright {upright:g}"
        return label
    return str(config.get("algo") or config.get("kind") or "run")


def branch_label(branch: dict[str, Any]) -> str:
    """What sets a branch apart (its ``branch.json``): not its source's continuation, and
    not another branch from the same step with other changes (which the label may not show)."""
    changes = branch.get("changes") or {}
    what = ", ".join(f"{k}={json.dumps(v)}" for k, v in changes.items()) or "no change"
    return f", branched at {branch['at_steps']:,} ({what})"


def expand_run_dirs(patterns: Sequence[str]) -> list[Path]:
    """Folders named by paths or glob patterns (``*``, ``?``, ``[...]``, ``**``), deduplicated.

    A pattern's matches without a ``config.json`` are skipped; a plain path must be a run.
    """
    found: dict[Path, Path] = {}
    for pattern in patterns:
        pattern = str(Path(pattern).expanduser())
        if any(c in pattern for c in "*?["):
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
            matches = [p for p in matches if RunDir(p).config.is_file()]
        else:
            if not RunDir(pattern).config.is_file():
                raise ConfigError(f"{pattern} is not a run folder (it has no config.json)")
            matches = [Path(pattern)]
        for path in matches:
            found.setdefault(path.resolve(), path)
    return list(found.values())


def load_runs(patterns: Sequence[str]) -> tuple[list[Run], list[str]]:
    """Runs with at least one evaluation, and notes on the folders skipped."""
    runs, skipped = [], []
    for path in expand_run_dirs(patterns):
        run_dir = RunDir(path)
        try:
            config = json.loads(run_dir.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{run_dir.config} is not readable JSON ({exc})") from exc
        every_row = run_dir.read_metrics()
        rows = [r for r in every_row if math.isfinite(r["eval_return_mean"])]
        if not rows:
            skipped.append(f"{path}: no evaluations yet")
            continue
        label, env, seed = run_label(config), str(config.get("env", "?")), config.get("seed", -1)
        if (branch_file := path / "branch.json").is_file():
            branch = json.loads(branch_file.read_text())
            label += branch_label(branch)
            if branch.get("reseed") is not None:  # a replicate of the other branches
                seed = branch["reseed"]
        steps = np.array([r["env_steps"] for r in rows])
        returns = np.array([r["eval_return_mean"] for r in rows])
        total, stop = config.get("total_steps"), config.get("stop_at_return")
        finished = total is None or steps[-1] >= total or (stop is not None and returns[-1] >= stop)
        collected = every_row[-1]["env_steps"]  # past the last evaluation with --eval-every
        runs.append(Run(path, label, env, int(seed), steps, returns, finished, collected))
        prior = np.array([r.get("policy_eval_return", math.nan) for r in rows])
        if np.isfinite(prior).any():  # a policy prior's own evaluations: a group of their own
            known = np.isfinite(prior)
            runs.append(
                Run(
                    path,
                    f"{label}: prior alone",
                    env,
                    int(seed),
                    steps[known],
                    prior[known],
                    finished,
                    collected,
                )
            )
    if not runs:
        raise ConfigError(
            f"no run folders with evaluations match {' '.join(patterns) or '(nothing given)'}; "
            "give run folders (or quoted glob patterns) holding config.json and metrics.csv"
        )
    return runs, skipped


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by label (prefixed with the env when the runs span several envs), by seed."""
    several_envs = len({run.env for run in runs}) > 1
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = f"{run.env} {run.label}" if several_envs else run.label
        groups.setdefault(label, []).append(run)
    return {label: sorted(group, key=lambda r: r.seed) for label, group in groups.items()}


def bootstrap_ci(
    values: np.ndarray,
    level: float = CI_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap CI of the mean over axis 0 of ``values: [N, G]`` → ``([G], [G])``."""
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"values must be [N >= 1, G], got shape {values.shape}")
    n = len(values)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], picks), 1.0 / n)
    means = weights @ values  # [R, G]
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    return low, high


def mean_band(runs: Sequence[Run]) -> Band:
    """Mean and CI where every seed has evaluations: each seed's curve is interpolated onto
    the union of the seeds' evaluation steps between the latest first and earliest last one."""
    start = max(run.steps[0] for run in runs)
    end = min(run.steps[-1] for run in runs)
    all_steps = np.unique(np.concatenate([run.steps for run in runs]))
    grid = all_steps[(all_steps >= start) & (all_steps <= end)]
    if len(grid) == 0:
        empty = np.zeros(0)
        return Band(empty, empty, empty, empty)
    values = np.stack([np.interp(grid, run.steps, run.returns) for run in runs])  # [N, G]
    low, high = bootstrap_ci(values)
    return Band(grid, values.mean(axis=0), low, high)


def summarise(
    label: str,
    runs: Sequence[Run],
    budgets: Sequence[int],
    threshold: float | None,
    window: tuple[int, int] | None = None,
) -> GroupSummary:
    """Returns at each budget, the mean return over ``window`` (start, end env steps) and
    steps to the threshold for one group."""
    stats = [
        BudgetStats(
            budget=budget, **SeedStats.fields_of(np.array([r.return_at(budget) for r in runs]))
        )
        for budget in budgets
    ]
    over_window = None
    if window is not None:
        start, end = window
        values = np.array([run.mean_over(start, end) for run in runs])
        over_window = WindowStats(start=start, end=end, **SeedStats.fields_of(values))
    reach = None
    if threshold is not None:
        hits = [s for s in (run.steps_to_reach(threshold) for run in runs) if s is not None]
        q25, median, q75 = np.percentile(hits, [25, 50, 75]) if hits else [math.nan] * 3
        reach = ThresholdStats(
            threshold, len(hits), len(runs), float(median), float(q25), float(q75)
        )
    notes = []
    seeds = [run.seed for run in runs]
    if len(set(seeds)) < len(seeds):
        notes.append(f"repeated seeds {sorted(seeds)}: each run still counts once")
    ends = {int(run.steps[-1]) for run in runs}
    if len(ends) > 1:
        notes.append(
            f"seeds end at different env steps ({min(ends)}–{max(ends)}): the curve stops at "
            f"{min(ends)}, where the shortest seed ends"
        )
    return GroupSummary(label, list(runs), stats, reach, notes, over_window)


def parse_reference(text: str) -> tuple[str, float]:
    """``"paper MBRL=250"`` → ``("paper MBRL", 250.0)``."""
    label, sep, value = text.rpartition("=")
    try:
        if not sep or not label.strip():
            raise ValueError
        return label.strip(), float(value)
    except ValueError:
        raise ConfigError(
            f"bad --reference {text!r}; write LABEL=VALUE, e.g. 'paper=250'"
        ) from None


def plot_comparison(
    groups: dict[str, list[Run]],
    path: str | Path,
    title: str,
    references: Sequence[tuple[str, float]] = (),
    threshold: float | None = None,
    log_x: bool = False,
) -> None:
    """Mean evaluation return per group with its 95% bootstrap CI band, saved as PNG."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in groups.items():
        band = mean_band(runs)
        if len(band.steps) == 0:
            continue
        marker = "o" if len(band.steps) == 1 else None
        (line,) = ax.plot(band.steps, band.mean, marker=marker, label=f"{label} (n={len(runs)})")
        ax.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.2)
    for k, (label, value) in enumerate(references):
        style = ("--", "-.", ":")[k % 3]
        ax.axhline(
            value, color="0.35", linestyle=style, linewidth=1.2, label=f"{label} ({value:g})"
        )
    if threshold is not None:
        ax.axhline(
            threshold, color="black", linestyle=":", linewidth=1, label=f"threshold ({threshold:g})"
        )
    ax.margins(y=0.08)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("env steps")
    ax.set_ylabel("evaluation return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    # below the axes, so no number of groups or length of label hides a curve
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_summary_csv(summaries: Sequence[GroupSummary], path: str | Path) -> None:
    """One row per group: seeds, return at each budget, steps to the threshold."""
    rows = []
    for s in summaries:
        row: dict[str, Any] = {
            "group": s.label,
            "env": " ".join(sorted({run.env for run in s.runs})),
            "seeds": len(s.runs),
            "seed_list": " ".join(str(seed) for seed in s.seeds),
        }
        for b in s.budgets:
            for key in ("mean", "std", "ci_low", "ci_high", "n"):
                row[f"return_at_{b.budget}_{key}"] = getattr(b, key)
        if (w := s.window) is not None:
            for key in ("mean", "std", "ci_low", "ci_high", "n"):
                row[f"mean_return_{w.start}_{w.end}_{key}"] = getattr(w, key)
        if s.threshold is not None:
            t = s.threshold
            row["threshold"] = t.threshold
            row["steps_to_threshold_median"] = t.median
            row["steps_to_threshold_q25"] = t.q25
            row["steps_to_threshold_q75"] = t.q75
            row["reached"] = t.reached
        row["runs"] = ";".join(str(run.path) for run in s.runs)
        rows.append(row)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _fmt(x: float, digits: int = 1) -> str:
    """A return (one decimal below 1,000) or, with ``digits=0``, env steps."""
    if not math.isfinite(x):
        return "–"
    return f"{x:,.0f}" if abs(x) >= 1000 or digits == 0 else f"{x:.{digits}f}"


def _cell(stats: SeedStats, seeds: int) -> str:
    """``mean ± std [CI]``, with ``(n=k)`` when only k of the group's seeds have a value."""
    if stats.n == 0:
        return "–"
    n = "" if stats.n == seeds else f" (n={stats.n})"
    ci = f"[{_fmt(stats.ci_low)}, {_fmt(stats.ci_high)}]"
    return f"{_fmt(stats.mean)} ± {_fmt(stats.std)} {ci}{n}"


def write_summary_md(
    summaries: Sequence[GroupSummary], path: str | Path, title: str, skipped: Sequence[str] = ()
) -> None:
    """The summary as a Markdown table, with the definitions and the runs behind each row."""
    threshold = summaries[0].threshold.threshold if summaries[0].threshold else None
    window = summaries[0].window
    head = ["group", "seeds"] + [f"return @ {b.budget:,} steps" for b in summaries[0].budgets]
    if window is not None:
        head.append(f"mean return {window.start:,}–{window.end:,} steps")
    if threshold is not None:
        head += [f"steps to ≥ {threshold:g}: median [IQR]", "reached"]
    lines = [
        f"# {title}",
        "",
        "Return: mean ± std over seeds [95% bootstrap CI of the mean]; a seed's return at a "
        "budget is its last evaluation at or before it, none past the end of a run that was "
        "stopped before it finished (n: seeds with one)."
        + (
            " Mean return over a window: each seed's mean evaluation in it, then mean ± std "
            "over the seeds; none for a run still short of the window's end, the last "
            "evaluation for a finished run that ended before the window."
            if window is not None
            else ""
        )
        + (
            " Steps to the threshold: first evaluation that reaches it; median and "
            "interquartile range over the seeds that reached it."
            if threshold is not None
            else ""
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in summaries:
        cells = [s.label, str(len(s.runs))]
        cells += [_cell(b, len(s.runs)) for b in s.budgets]
        if s.window is not None:
            cells.append(_cell(s.window, len(s.runs)))
        if s.threshold is not None:
            t = s.threshold
            steps = f"{_fmt(t.median, 0)} [{_fmt(t.q25, 0)}, {_fmt(t.q75, 0)}]"
            cells.append(steps if t.reached else "–")
            cells.append(f"{t.reached}/{t.n}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Runs", ""]
    for s in summaries:
        lines.append(f"- **{s.label}** (seeds {', '.join(map(str, s.seeds))}):")
        lines += [f"  - `{run.path}`" for run in s.runs]
        lines += [f"  - note: {note}" for note in s.notes]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(skipped)]
    Path(path).write_text("\n".join(lines) + "\n")


def compare(
    patterns: Sequence[str],
    out: str | Path,
    budgets: Sequence[int] = (),
    threshold: float | None = None,
    references: Sequence[str] = (),
    log_x: bool = False,
    window: tuple[int, int] | None = None,
) -> Comparison:
    """Group the runs, write ``curves.png``, ``summary.csv`` and ``summary.md`` into ``out``.

    Without ``budgets``, the one budget is the last env step of any run (final returns).
    ``window`` (start, end env steps) adds each group's mean return over that window.
    """
    lines = [parse_reference(text) for text in references]
    if any(b <= 0 for b in budgets):
        raise ConfigError(f"budgets must be positive env steps, got {list(budgets)}")
    if window is not None and not 0 <= window[0] <= window[1]:
        raise ConfigError(
            f"--window takes START END env steps with 0 <= START <= END, got {list(window)}"
        )
    runs, skipped = load_runs(patterns)
    groups = group_runs(runs)
    budgets = sorted(set(budgets)) or [int(max(run.steps[-1] for run in runs))]
    summaries = [
        summarise(label, group, budgets, threshold, window) for label, group in groups.items()
    ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    title = " / ".join(sorted({run.env for run in runs}))
    files = [out / "curves.png", out / "summary.csv", out / "summary.md"]
    plot_comparison(groups, files[0], title, lines, threshold, log_x)
    write_summary_csv(summaries, files[1])
    write_summary_md(summaries, files[2], f"Comparison: {title}", skipped)
    return Comparison(summaries, files, skipped)
