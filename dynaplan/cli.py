"""The command line: ``dynaplan {train,baseline,compare,...}``; the only place that parses args.

Every subcommand is a thin layer over the Python API. Errors the user can fix are
printed as one line, with exit code 2 and no traceback.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro
import tyro._strings

from dynaplan.agents.baselines import BaselineConfig
from dynaplan.agents.mbpo import MBPOConfig
from dynaplan.analysis.compare import Comparison
from dynaplan.config import RECIPES, TrainConfig, load_preset, presets, recipe_for
from dynaplan.errors import ConfigError, DynaplanError
from dynaplan.execution import Execution
from dynaplan.imitation.clone import CloneConfig
from dynaplan.loop import RunResult
from dynaplan.rundir import last_evaluation


def _reflow_help(text: str) -> str:
    """A docstring as help text: its wrapped lines joined, blank lines kept as breaks."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


# tyro 1.0 joins a docstring's wrapped lines only where the next line starts with a letter, and
# looks before dedenting, so every indented continuation line of a field docstring kept its
# break in --help; its own helper is replaced (tested in test_cli).
tyro._strings.remove_single_line_breaks = _reflow_help


@dataclass
class TrainCommand:
    """Train an agent by model-based RL with MPC (Algorithm 1), or resume a killed run."""

    config: Annotated[TrainConfig, tyro.conf.arg(name="")]
    out: Path | None = None
    """Run folder to create (must not hold a run); default runs/<env>-<planner>-<time>."""
    preset: Annotated[
        str | None,
        tyro.conf.arg(
            help=f"Start from a tuned preset ({', '.join(presets())}); flags given here "
            "override it. Without it a new run starts from its env's recipe where there is one "
            f"({', '.join(f'{env}: {name}' for env, name in RECIPES.items())}); none gives the "
            "bare defaults."
        ),
    ] = None
    resume: Path | None = None
    """Continue the run in this folder from its last checkpoint; only --total-steps (to extend
    it), --device, --threads, --progress and --snapshots may be given beside it."""
    branch_from: Path | None = None
    """Start a new run (--out) where this run (trained with --snapshots) stood at --branch-at
    env steps: its data, learned parts and metrics up to there; the config fields given here
    change from there on (not --env, --seed, --random-steps, --steps-per-iteration or the
    sizes of the learned parts). Without them it is the control branch."""
    branch_at: int | None = None
    """Env steps of the --branch-from snapshot to start from."""
    branch_reseed: int | None = None
    """Replace the snapshot's random states by ones from this seed (the evaluation episodes
    stay): branches from one snapshot with different --branch-reseed are replicates."""


@dataclass
class BaselineCommand:
    """Train a baseline (SB3 PPO or SAC) or evaluate a zero/random policy, or resume one."""

    config: Annotated[BaselineConfig, tyro.conf.arg(name="")]
    out: Path | None = None
    """Run folder to create (must not hold a run); default runs/<env>-<algo>-<time>."""
    resume: Path | None = None
    """Continue the run in this folder from its last checkpoint (no other flags)."""


@dataclass
class MBPOCommand:
    """Train SAC on short model rollouts (MBPO, Janner et al. 2019), or resume a killed run."""

    config: Annotated[MBPOConfig, tyro.conf.arg(name="")]
    out: Path | None = None
    """Run folder to create (must not hold a run); default runs/<env>-mbpo-<time>."""
    resume: Path | None = None
    """Continue the run in this folder from its last checkpoint (no other flags)."""


@dataclass
class CloneCommand:
    """Clone a run's MPC controller into an SB3 PPO policy (behaviour cloning or DAgger)."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """A dynaplan train run: its MPC data (and, for dagger, its model) are the expert."""
    config: Annotated[CloneConfig, tyro.conf.arg(name="")]
    out: Path | None = None
    """Folder for policy.zip and clone.json; default RUN_DIR/clone-<method>."""


@dataclass
class CompareCommand:
    """Compare runs across seeds: curves with 95% CIs, returns at budgets, steps to a threshold."""

    run_dirs: Annotated[
        tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR...")
    ] = ()
    """Run folders or quoted glob patterns, e.g. 'runs/hopper-*/seed_*'; grouped by algo/variant."""
    out: Path | None = None
    """Output folder for curves.png, summary.csv and summary.md; default runs/compare-<time>."""
    threshold: float | None = None
    """Report the env steps to first reach this evaluation return."""
    budgets: tuple[int, ...] = ()
    """Env-step budgets for the return table; default the last env step of any run."""
    log_x: bool = False
    """Log-scale env-step axis."""
    reference: tuple[str, ...] = ()
    """Horizontal reference lines LABEL=VALUE, e.g. "paper MBRL=250"."""
    window: Annotated[tuple[int, int] | None, tyro.conf.arg(metavar="START END")] = None
    """Also report each group's mean return over env steps START..END (each seed's mean
    evaluation in it), steadier than one evaluation where curves swing."""


@dataclass
class ExperimentCommand:
    """Run one of the paper's comparisons (seeds x variants in parallel), then compare them."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME")]
    """pendulum, hopper, ant (learning curves), planners, model-error (one trained Hopper
    model), warmstart (PPO from MPC clones), beyond or beyond-ant (issue 7: MPC + value +
    policy prior, MBPO, SAC)."""
    seeds: int = 3
    """Seeds per variant."""
    budget: str = "full"
    """full (the presets' budgets) or small (minutes on a 2-core CPU)."""
    out: Path | None = None
    """Output folder (runs/ and compare/ inside); default runs/experiment-<name>-<time>."""
    variants: tuple[str, ...] = ()
    """Run only these variants (default: all); the comparison covers every run under out."""
    execution: Annotated[Execution, tyro.conf.arg(name="")] = field(default_factory=Execution)


@dataclass
class SweepCommand:
    """Grid or random search over config fields x seeds (local processes or Ray), then compare."""

    file: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="[SWEEP.yaml]")] = None
    """Sweep file: base, grid, random (samples, seed, fields), seeds, out; flags override it."""
    preset: str | None = None
    """Base config preset (replaces the file's base)."""
    grid: tuple[str, ...] = ()
    """Grid fields FIELD=V1,V2,..., e.g. horizon=1,5,10 search.lr=0.1,0.3 (added to the file's)."""
    seeds: int | None = None
    """Seeds per variant; default the file's, else 1."""
    out: Path | None = None
    """Output folder (runs/ and compare/ inside); default the file's, else runs/sweep-<time>."""
    execution: Annotated[Execution, tyro.conf.arg(name="")] = field(default_factory=Execution)


@dataclass
class EvaluateCommand:
    """Evaluate the agent of a saved run (MPC or baseline) on fresh episodes."""

    run_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUN_DIR")]
    """Folder of a train, baseline or mbpo run."""
    episodes: int = 5
    """Episodes to run."""
    seed: int = 12345
    """Seed of the first episode."""
    no_plan: tyro.conf.FlagCreatePairsOff[bool] = False
    """Act with the run's policy prior alone, without planning (runs with policy.enabled)."""
    change: tuple[str, ...] = ()
    """FIELD=VALUE planning changes for an MPC run, e.g. --change horizon=5
    value.enabled=false (planner, horizon, search.*, value.enabled, value.pessimism,
    policy.enabled, policy.share, policy.noise)."""
    at_steps: int | None = None
    """Evaluate the controller as it was at this many env steps (a snapshot of an MPC run
    trained with --snapshots) instead of its last checkpoint."""


SOLVED_RETURN = 1000.0
"""InvertedPendulum-v5 is solved when an episode balances for all 1000 steps."""


@dataclass
class DemoCommand:
    """MBRL with the gradient planner on InvertedPendulum-v5, a few minutes on a CPU."""

    out: Path | None = None
    """Run folder; default runs/demo-<time>."""
    seed: int = 0


@dataclass
class ModelErrorCommand:
    """Model-error analysis (paper Fig. 5-8): one-step and open-loop prediction errors."""

    run_dir: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="[RUN_DIR]")] = None
    """Run folder whose latest model is analysed (or give --model and --env)."""
    episode: int | None = None
    """Episode id in the run's (or --buffer's) data; default the longest episode."""
    fresh: Literal["random", "zero", "mpc"] | None = None
    """Analyse a new episode collected with this policy instead (mpc needs RUN_DIR)."""
    horizons: tuple[int, ...] = (1, 5, 10, 20)
    """Open-loop horizons H of the error figure and summary."""
    starts: tuple[int, ...] = (0, 65)
    """Start steps t0 of the open-loop figures (moved back if the episode is shorter)."""
    open_loop_steps: int | None = None
    """Length of the open-loop rollouts; default the longest horizon."""
    seed: int = 12345
    """Env seed of a --fresh episode."""
    out: Path | None = None
    """Output folder; default RUN_DIR/model_error (./model_error without RUN_DIR)."""
    model: Path | None = None
    """A model.pt to analyse instead of a run folder's model."""
    buffer: Path | None = None
    """A replay buffer (.npz) to take the episode from instead of a run folder's journal."""
    env: str | None = None
    """Env id for --model (names the features and makes --fresh episodes)."""


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _train(args: list[str]) -> None:
    from dynaplan import loop

    preset = _value_of("--preset", args)
    start = _recipe_preset(args) if preset is None else preset
    start = None if start == "none" else start
    default = TrainCommand(load_preset(start) if start else TrainConfig())
    command = tyro.cli(
        TrainCommand,
        args=args,
        default=default,
        prog="dynaplan train",
        config=(tyro.conf.EnumChoicesFromValues,),  # --search.propagation tsinf, as in config.json
    )
    if (command.branch_from is None) != (command.branch_at is None):
        raise ConfigError("--branch-from and --branch-at go together: a run and a step of it")
    if command.branch_reseed is not None and command.branch_from is None:
        raise ConfigError("--branch-reseed needs --branch-from and --branch-at")
    if command.branch_from is not None and (command.resume is not None or preset):
        raise ConfigError(
            "a branch takes its source's config: give only the fields to change beside "
            "--branch-from (not --resume or --preset)"
        )
    if command.resume is not None:
        changes = _resume_changes(args, command.config, allowed=loop.RESUME_FIELDS)
        result = loop.resume(command.resume, changes=changes)
    elif command.branch_from is not None and command.branch_at is not None:
        own_flags = ("branch_from", "branch_at", "branch_reseed", "out")
        changes = _flag_changes(args, command.config, skip=own_flags)
        out = command.out or _default_out(f"{command.branch_from.name}-branch")
        result = loop.branch(
            command.branch_from, command.branch_at, out, changes, reseed=command.branch_reseed
        )
    else:
        config = command.config
        out = command.out or _default_out(f"{config.env}-{config.planner}")
        result = loop.train(config, out)
    _print_done(result)


def _recipe_preset(args: list[str]) -> str | None:
    """The recipe a new run with no --preset starts from (None for a resume or a branch,
    which take their folder's config); says which when there is one."""
    if any(_value_of(flag, args) is not None for flag in ("--resume", "--branch-from")):
        return None
    if any(arg in ("-h", "--help") for arg in args):
        return None
    env = _value_of("--env", args) or TrainConfig.env
    recipe = recipe_for(env)
    if recipe is not None:
        print(f"{env}: starting from its recipe, preset {recipe} (--preset none: bare defaults)")
    return recipe


def _print_done(result: RunResult) -> None:
    last = last_evaluation(result.metrics)
    if last is not None:
        print(
            f"done: {int(last['env_steps'])} env steps, evaluation return "
            f"{last['eval_return_mean']:.1f} ± {last['eval_return_std']:.1f}; "
            f"run folder {result.run_dir}"
        )


def _baseline(args: list[str]) -> None:
    from dynaplan.agents import baselines

    command = tyro.cli(BaselineCommand, args=args, prog="dynaplan baseline")
    if command.resume is not None:
        _resume_changes(args, command.config, allowed=())
        result = baselines.resume_baseline(command.resume)
    else:
        config = command.config
        out = command.out or _default_out(f"{config.env}-{config.algo}")
        result = baselines.run_baseline(config, out)
    _print_done(result)


def _mbpo(args: list[str]) -> None:
    from dynaplan.agents import mbpo

    command = tyro.cli(MBPOCommand, args=args, prog="dynaplan mbpo")
    if command.resume is not None:
        _resume_changes(args, command.config, allowed=())
        result = mbpo.resume_mbpo(command.resume)
    else:
        config = command.config
        result = mbpo.run_mbpo(config, command.out or _default_out(f"{config.env}-mbpo"))
    _print_done(result)


def _compare(args: list[str]) -> None:
    from dynaplan.analysis.compare import compare

    command = tyro.cli(CompareCommand, args=args, prog="dynaplan compare")
    out = command.out or _default_out("compare")
    result = compare(
        command.run_dirs,
        out,
        command.budgets,
        command.threshold,
        command.reference,
        command.log_x,
        command.window,
    )
    _print_comparison(result, out)


def _print_comparison(result: Comparison, out: Path) -> None:
    for summary in result.summaries:
        final = summary.budgets[-1]
        line = (
            f"  {summary.label:<28} {len(summary.runs)} seed(s), return @ {final.budget:,} steps "
            f"{final.mean:.1f} ± {final.std:.1f}"
        )
        if (w := summary.window) is not None:
            line += f", mean over {w.start:,}–{w.end:,} {w.mean:.1f} ± {w.std:.1f}"
        if summary.threshold is not None:
            t = summary.threshold
            line += f", reached {t.threshold:g}: {t.reached}/{t.n}"
            if t.reached:
                line += f" (median {t.median:,.0f} steps)"
        print(line)
    for note in result.skipped:
        print(f"  skipped {note}")
    print(f"wrote {', '.join(path.name for path in result.files)} to {out}")


def _experiment(args: list[str]) -> None:
    from dynaplan.experiments import run_experiment

    command = tyro.cli(ExperimentCommand, args=args, prog="dynaplan experiment")
    out = command.out or _default_out(f"experiment-{command.name}")
    print(
        f"dynaplan experiment {command.name} ({command.budget}): {command.seeds} seed(s), "
        f"{_describe(command.execution)}, output {out}"
    )
    result = run_experiment(
        command.name, command.seeds, out, command.budget, command.execution, command.variants
    )
    if result.comparison is not None:
        _print_comparison(result.comparison, out / "compare")
    if result.files:
        print(f"analysis: {', '.join(str(path) for path in result.files)}")


def _sweep(args: list[str]) -> None:
    from dynaplan.sweep import Sweep, load_sweep, parse_yaml, run_sweep

    command = tyro.cli(SweepCommand, args=args, prog="dynaplan sweep")
    if not command.grid and all(x is None for x in (command.file, command.preset, command.seeds)):
        raise ConfigError(
            "nothing to sweep: give a sweep file, --grid FIELD=V1,V2,..., --preset NAME or "
            "--seeds N (several seeds of one config)"
        )
    data = load_sweep(command.file) if command.file is not None else {}
    if command.preset is not None:
        data["base"] = command.preset
    for item in command.grid:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"--grid takes FIELD=V1,V2,... (e.g. horizon=1,5,10), got {item!r}")
        grid = data["grid"] = dict(data.get("grid") or {})
        grid[name] = [parse_yaml(value) for value in values.split(",")]
    if command.seeds is not None:
        data["seeds"] = command.seeds
    sweep = Sweep.from_dict(data)
    out = command.out or (Path(sweep.out) if sweep.out else _default_out("sweep"))
    variants = sweep.variants()
    print(
        f"dynaplan sweep: {len(variants)} variant(s) x {sweep.seeds} seed(s), "
        f"{_describe(command.execution)}, output {out}"
    )
    result = run_sweep(sweep, out, command.execution)
    _print_comparison(result, out / "compare")


def _describe(execution: Execution) -> str:
    if execution.backend == "local":
        return f"{execution.jobs} local job(s)"
    where = execution.address or "a local Ray instance"
    return f"Ray ({where}; {execution.cpus_per_run:g} CPU, {execution.gpus_per_run:g} GPU per run)"


def _evaluate(args: list[str]) -> None:
    import torch

    from dynaplan.agents.baselines import is_baseline_run, load_baseline_agent
    from dynaplan.agents.factory import load_mpc_agent
    from dynaplan.agents.mbpo import is_mbpo_run, load_mbpo_agent
    from dynaplan.envs import make_env
    from dynaplan.evaluation import evaluate
    from dynaplan.policy import PolicyAgent
    from dynaplan.sweep import parse_assignments

    command = tyro.cli(EvaluateCommand, args=args, prog="dynaplan evaluate")
    baseline, mbpo = is_baseline_run(command.run_dir), is_mbpo_run(command.run_dir)
    for flag, given in (("--change", command.change), ("--at-steps", command.at_steps)):
        if given not in (None, ()) and (baseline or mbpo):
            raise ConfigError(f"{flag} applies to MPC runs (dynaplan train), not baselines or MBPO")
    if baseline:
        agent, config = load_baseline_agent(command.run_dir)
    elif mbpo:
        agent, config = load_mbpo_agent(command.run_dir)
    else:
        agent, config = load_mpc_agent(
            command.run_dir, changes=parse_assignments(command.change), at_steps=command.at_steps
        )
    if command.no_plan:
        if getattr(agent, "policy", None) is None:
            raise ConfigError(
                f"{command.run_dir} has no policy prior to act without planning; "
                "train with --policy.enabled"
            )
        agent = PolicyAgent(agent.policy)
    if config.threads > 0:  # as in the run itself: small models act fastest on one thread
        torch.set_num_threads(config.threads)
    env = make_env(config.env, **config.env_kwargs)
    result = evaluate(agent, env, command.episodes, command.seed)
    print(
        f"{config.env}: return {result.mean:.1f} ± {result.std:.1f} "
        f"over {command.episodes} episodes"
    )
    print("returns:", " ".join(f"{r:.1f}" for r in result.returns))


def _demo(args: list[str]) -> None:
    from dynaplan import loop

    command = tyro.cli(DemoCommand, args=args, prog="dynaplan demo")
    config = load_preset("pendulum")
    config.seed = command.seed
    config.stop_at_return = SOLVED_RETURN
    out = command.out or _default_out("demo")
    print(f"dynaplan demo: {config.env}, gradient MPC, run folder {out}")
    result = loop.train(config, out)
    steps = result.steps_to_reach(SOLVED_RETURN)
    if steps is None:
        print(f"return {SOLVED_RETURN:g} not reached within {config.total_steps} env steps")
    else:
        print(f"solved: evaluation return {SOLVED_RETURN:g} reached after {steps} env steps")
    print(f"learning curve: {result.run_dir / 'learning_curve.png'}")


def _clone(args: list[str]) -> None:
    from dynaplan.imitation.clone import clone

    command = tyro.cli(CloneCommand, args=args, prog="dynaplan clone")
    out = command.out or command.run_dir / f"clone-{command.config.method}"
    result = clone(command.run_dir, out, command.config)
    report = result.report
    print(
        f"{report['env']}: {command.config.method} clone on {report['pairs']} pairs, "
        f"return {result.clone_return:.1f} ± {report['clone']['return_std']:.1f} "
        f"over {command.config.eval_episodes} episodes"
    )
    expert = report["expert"]
    if "return_mean" in expert:
        print(f"MPC expert on the same episodes: {expert['return_mean']:.1f}")
    print(f"wrote {out / 'policy.zip'} (stable_baselines3.PPO.load) and {out / 'clone.json'}")


def _model_error(args: list[str]) -> None:
    import numpy as np

    from dynaplan.agents.factory import load_mpc_agent
    from dynaplan.analysis import model_error
    from dynaplan.buffer import ReplayBuffer
    from dynaplan.envs import make_env
    from dynaplan.models import DynamicsModel

    command = tyro.cli(ModelErrorCommand, args=args, prog="dynaplan model-error")
    if command.run_dir is not None:
        model, config, run = model_error.load_run_model(command.run_dir)
        env_id, env_kwargs = config.env, config.env_kwargs
        out = command.out or run.path / "model_error"
    elif command.model is not None and command.env is not None:
        model, env_id, env_kwargs = DynamicsModel.load(command.model).eval(), command.env, {}
        out = command.out or Path("model_error")
    else:
        raise ConfigError("give a RUN_DIR, or --model PATH and --env ENV_ID")
    if command.fresh is not None:
        env = make_env(env_id, **env_kwargs)
        if command.fresh == "mpc":
            if command.run_dir is None:
                raise ConfigError("--fresh mpc needs a RUN_DIR (the run's planner acts)")
            agent, _ = load_mpc_agent(command.run_dir, device="cpu")
            agent.reset()
            policy = agent.act
        elif command.fresh == "random":
            env.action_space.seed(command.seed)
            policy = lambda _: env.action_space.sample()  # noqa: E731
        else:
            policy = lambda _: np.zeros(env.action_space.shape, np.float32)  # noqa: E731
        label = f"fresh {command.fresh} episode, seed {command.seed}"
        episode = model_error.collect_episode(env, policy, command.seed, label)
        env.close()
    elif command.buffer is not None:
        episode = model_error.episode_from_buffer(
            ReplayBuffer.load(command.buffer), command.episode
        )
    elif command.run_dir is not None:
        episode = model_error.episode_from_journal(
            run.journal, model.obs_dim, model.act_dim, command.episode
        )
    else:
        raise ConfigError("with --model, give --buffer PATH or --fresh POLICY for the episode")
    report = model_error.analyse_episode(
        model,
        episode.obs,
        episode.actions,
        episode.next_obs,
        model_error.default_features(env_id, model.obs_dim, env_kwargs),
        command.horizons,
        command.starts,
        command.open_loop_steps,
        label=f"{env_id}, {episode.label}",
    )
    paths = model_error.write_report(report, out)
    growth = report.summary()["growth"]
    print(f"{env_id}: {episode.label} ({len(episode)} steps); mean absolute error by horizon")
    for name, by_h in report.mean_abs_error().items():
        errors = "  ".join(f"H={h}: {e:.4g}" for h, e in by_h.items())
        ratio = growth["ratio"][name]
        ratio_text = "n/a" if ratio is None else f"{ratio:.3g}"
        print(
            f"  {name:<22} {errors}  "
            f"({growth['long_horizon']}-step / {growth['short_horizon']}-step: {ratio_text})"
        )
    print(f"wrote {len(paths)} files to {out}")


def _resume_changes(args: list[str], config: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The config fields that flags beside --resume set, with their parsed values; a flag for
    anything outside ``allowed`` is an error rather than silently ignored."""
    given = _flag_fields(args, config, skip=("resume",))
    refused = [name for name in given if name not in allowed]
    if refused == ["out"]:
        raise ConfigError(
            "--resume continues a run in its own folder: drop --out (to go on from a run's "
            "snapshot with other settings in a new folder, use --branch-from)"
        )
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        can = ", ".join("--" + name.replace("_", "-") for name in allowed) or "no flag"
        raise ConfigError(
            f"{flags} cannot change when a run resumes (its data and checkpoints come from "
            f"the old settings); with --resume, {can} can. Start a new run with --out instead"
        )
    return {name: _field_value(config, name) for name in given}


def _flag_changes(args: list[str], config: Any, skip: tuple[str, ...]) -> dict[str, Any]:
    """The dotted config fields the flags in ``args`` set (``search.lr``), with their parsed
    values in ``config``; ``skip`` names the command's own flags, which are not fields."""
    given = _flag_fields(args, config, skip)
    unknown = [name for name in given if not _is_field(config, name)]
    if unknown:
        flags = ", ".join("--" + name.replace("_", "-") for name in unknown)
        raise ConfigError(f"{flags} cannot be given here: not a field of the run's config")
    return {name: _field_value(config, name) for name in given}


def _flag_fields(args: list[str], config: Any, skip: tuple[str, ...]) -> list[str]:
    """The field names of the ``--flag`` arguments (``--no-progress`` names ``progress``,
    ``--policy.no-check-against-best`` names ``policy.check_against_best``)."""
    names = []
    for arg in args:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        *parents, leaf = name.split(".")
        if leaf.startswith("no_") and _is_field(config, ".".join([*parents, leaf[3:]])):
            name = ".".join([*parents, leaf[3:]])
        if name not in skip:
            names.append(name)
    return names


def _is_field(config: Any, name: str) -> bool:
    try:
        _field_value(config, name)
    except AttributeError:
        return False
    return True


def _field_value(config: Any, name: str) -> Any:
    for part in name.split("."):
        config = getattr(config, part)
    return config


def _value_of(flag: str, args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


COMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "train": (_train, TrainCommand.__doc__ or ""),
    "baseline": (_baseline, BaselineCommand.__doc__ or ""),
    "mbpo": (_mbpo, MBPOCommand.__doc__ or ""),
    "clone": (_clone, CloneCommand.__doc__ or ""),
    "compare": (_compare, CompareCommand.__doc__ or ""),
    "experiment": (_experiment, ExperimentCommand.__doc__ or ""),
    "sweep": (_sweep, SweepCommand.__doc__ or ""),
    "evaluate": (_evaluate, EvaluateCommand.__doc__ or ""),
    "demo": (_demo, DemoCommand.__doc__ or ""),
    "model-error": (_model_error, ModelErrorCommand.__doc__ or ""),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: dynaplan COMMAND [OPTIONS]   (dynaplan COMMAND --help for options)\n")
        for name, (_, doc) in COMMANDS.items():
            print(f"  {name:<12} {doc.strip().splitlines()[0]}")
        return 0
    if argv[0] not in COMMANDS:
        print(
            f"error: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        COMMANDS[argv[0]][0](argv[1:])
    except DynaplanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if argv[0] in ("experiment", "sweep"):
            hint = "run the same command again (finished runs are skipped, the rest resume)"
        else:
            resumable = argv[0] if argv[0] in ("train", "baseline", "mbpo") else "train"
            hint = f"resume with: dynaplan {resumable} --resume RUN_DIR"
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
