"""Typed experiment configuration; every run writes it as ``config.json``.

Library classes take plain arguments; only the loop and the command line read these.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from dynaplan.errors import ConfigError
from dynaplan.types import PolicyKind, Precision, Propagation, ValueKind

MODEL_KINDS = ("mlp", "ensemble", "pets")
PLANNER_NAMES = ("shooting", "cem", "mppi", "grad", "cem-grad")
PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelConfig:
    """Dynamics model and its training."""

    ensemble_size: int = 5
    """Members for 'ensemble' and 'pets' (an 'mlp' always has one)."""
    num_elites: int | None = None
    """Members used for planning after training; None keeps all."""
    hidden_size: int = 200
    """Width of each hidden layer."""
    num_layers: int = 3
    """Number of hidden layers."""
    activation: str = "silu"
    """silu, relu, tanh or elu."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 1e-5
    """AdamW weight decay."""
    batch_size: int = 256
    """Minibatch size (rows per member)."""
    max_epochs: int = 50
    """Epoch cap per training round."""
    max_updates: int | None = None
    """Optional cap on gradient steps per training round."""
    patience: int = 5
    """Epochs without validation improvement before stopping."""
    val_fraction: float = 0.1
    """Share of episodes held out for validation and early stopping."""
    from_scratch: bool = False
    """Re-initialise the model before every training round instead of continuing."""

    def validate(self) -> None:
        """Raise ConfigError naming the first bad size or rate (before a run folder is made)."""
        sizes = ("ensemble_size", "hidden_size", "num_layers", "batch_size", "max_epochs")
        for name in (*sizes, "max_updates"):  # max_updates None: no cap
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"dynamics.{name} must be positive, got {value}")
        _check_ranges(
            "dynamics",
            ("patience", self.patience, self.patience >= 0, ">= 0"),
            ("lr", self.lr, self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0"),
            ("val_fraction", self.val_fraction, 0 <= self.val_fraction <= 1, "in [0, 1]"),
        )


@dataclass
class PlannerConfig:
    """Planner knobs; None means the planner's own default."""

    gamma: float = 1.0
    """Discount of predicted rewards."""
    particles: int = 1
    """Model rollouts per candidate sequence (PETS uses 20 with 'tsinf')."""
    propagation: Propagation = Propagation.EXPECTATION
    """expectation, ts1 or tsinf."""
    replan_every: int = 1
    """Execute this many planned actions before planning again."""
    compile: bool = False
    """Roll the model out through torch.compile (fused kernels); eager where it fails."""
    cuda_graph: bool = True
    """On CUDA, capture each whole plan as one CUDA graph and replay it; eager where it fails."""
    precision: Precision = Precision.FP32
    """Matmul arithmetic of planning rollouts: fp32, tf32 (CUDA) or bf16 (see planning_speed)."""
    disagreement_penalty: float = 0.0
    """Subtract this times the ensemble's disagreement from each predicted reward (ensembles)."""
    safety_margin: float = 0.0
    """Plan as if every healthy range were pulled in by this much at each bound, in reward and
    termination (metres for z, radians for angles): a buffer for model error near a bound.
    Only tasks with healthy ranges (Hopper, Walker2d, Ant)."""
    min_upright: float | None = None
    """Plan as if the torso were unhealthy once its up axis tilts so far that the axis's vertical
    component (the cosine of the tilt) falls below this: 0 ends a plan at lying on the side, so
    plans that flip the body over score as falls. The env never ends a flipped Ant's episode,
    but a flipped Ant never walks again. Only tasks with a free torso (Ant); None: off."""
    termination_gradient: bool = False
    """Let a plan feel what a predicted termination costs: at a rollout's first predicted
    termination, the gradient of a soft continuation weighted by the terminal value of the start
    state (the returns stay exact; see discounted_returns), so a gradient plan that
    jumps or falls out of the healthy ranges is pushed back. Needs value.enabled; only tasks
    with healthy ranges (Hopper, Walker2d, Ant); only the planners that follow gradients
    (grad, cem-grad) use it."""
    num_candidates: int | None = None
    """grad: parallel candidate sequences."""
    iterations: int | None = None
    """grad: Adam steps; cem, mppi, cem-grad: refits per plan."""
    lr: float | None = None
    """grad, cem-grad: Adam step size in normalised action units."""
    num_samples: int | None = None
    """shooting, mppi: sampled sequences."""
    population: int | None = None
    """cem, cem-grad: samples per iteration."""
    num_elites: int | None = None
    """cem, cem-grad: elites per iteration."""
    alpha: float | None = None
    """cem, cem-grad: smoothing of the sampling distribution."""
    init_std: float | None = None
    """cem, cem-grad: initial std in normalised units."""
    noise_std: float | None = None
    """mppi: sampling noise in normalised units."""
    temperature: float | None = None
    """mppi: temperature in units of return."""
    grad_steps: int | None = None
    """cem-grad: Adam steps on the elites per iteration."""

    _OPTIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "shooting": ("num_samples",),
        "cem": ("population", "num_elites", "iterations", "alpha", "init_std"),
        "mppi": ("num_samples", "iterations", "noise_std", "temperature"),
        "grad": ("num_candidates", "iterations", "lr"),
        "cem-grad": (
            "population",
            "num_elites",
            "iterations",
            "alpha",
            "init_std",
            "grad_steps",
            "lr",
        ),
    }

    def validate(self) -> None:
        """Raise ConfigError on a knob no planner can use (before any env step is taken)."""
        positive = ("particles", "replan_every", "num_candidates", "num_samples", "population")
        positive += ("num_elites", "lr", "init_std", "noise_std", "temperature")
        for name in positive:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"search.{name} must be positive, got {value}")
        for name in ("iterations", "grad_steps"):  # 0: the best warm start, or CEM without Adam
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"search.{name} cannot be negative, got {value}")
        if self.alpha is not None and not 0 <= self.alpha < 1:
            raise ConfigError(f"search.alpha must be in [0, 1), got {self.alpha}")

    def options(self, planner: str) -> dict[str, Any]:
        """The keyword options that apply to ``planner`` and are set."""
        names = self._OPTIONS[planner]
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass
class ValueConfig:
    """The terminal value ``γ^H V(ŝ_H)`` added to the planning objective (dynaplan.values)."""

    enabled: bool = False
    """Plan with a terminal value of the kind below."""
    kind: ValueKind = ValueKind.CRITIC
    """critic: V(s) learned by TD on the real transitions (the fields below); lqr: the LQR
    cost-to-go of the model linearised at the task's equilibrium, refit after each model fit
    (regulation tasks such as InvertedPendulum; uses only gamma)."""
    ensemble_size: int = 5
    """Critics in the ensemble."""
    hidden_size: int = 256
    num_layers: int = 2
    gamma: float = 0.99
    """Discount of the value's own TD targets."""
    lr: float = 3e-4
    """Adam learning rate."""
    batch_size: int = 256
    """Rows per critic per update."""
    updates: int = 1000
    """TD updates after each model training round."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    pessimism: float = 0.0
    """Plan with mean − pessimism · std over the critics."""
    td_steps: int = 1
    """Real steps in each TD(λ) target (1: TD(0))."""
    td_lambda: float = 0.95
    """λ of the truncated λ-return over td_steps."""
    expansion: int = 0
    """Model-based value expansion: imagined steps under the policy prior after each real
    transition in the TD targets (needs policy.enabled and td_steps 1; 0: off)."""


@dataclass
class PolicyConfig:
    """A policy prior trained through the model (dynaplan.policy) that seeds the planner."""

    enabled: bool = False
    """Learn π(s) on imagined rollouts after each model fit; its plan seeds the planner."""
    kind: PolicyKind = PolicyKind.DETERMINISTIC
    """deterministic (a prior on the terminal value) or actor-critic (a stochastic actor with
    its own Q critics and entropy weight, trained on short rollouts from states its own
    longer rollouts reached; its soft value ends the plans, so value.enabled stays off)."""
    hidden_size: int = 256
    num_layers: int = 2
    horizon: int | None = None
    """Imagined steps per rollout (None: the planning horizon); the value, if any, ends it."""
    gamma: float = 0.99
    lr: float = 3e-4
    batch_size: int = 256
    """Start states per update."""
    updates: int = 200
    """Ascent steps after each model training round."""
    share: float = 0.25
    """Share of the planner's candidates drawn around the policy's plan."""
    noise: float = 0.1
    """Std of those draws in normalised action units."""
    collect: bool = False
    """Collect data by acting with the prior instead of planning (model-based policy learning);
    evaluations still report both the planner and the prior."""
    check_horizon: int = 0
    """Model-rollout steps, from the buffer's reset states and without the value, that check
    each refit: one that lowers this return by more than check_tolerance is undone (0: off)."""
    check_tolerance: float = 0.05
    """Share of the previous check return a refit may lose and still be kept."""
    check_against_best: bool = False
    """Hold each refit to the better of the previous prior and the best one the check has kept,
    both scored under the current model, and restore the better one when it fails: refits that
    each lose a little drift at most check_tolerance below the best instead of ratcheting the
    prior down. Needs check_horizon > 0."""
    safety_margin: float = 0.0
    """Train and check the prior against the healthy ranges pulled in by this much, as
    search.safety_margin does for the planner (the value still learns the exact task)."""
    min_upright: float | None = None
    """Train and check the prior as if a torso tilted past this were unhealthy, as
    search.min_upright does for the planner: a prior that turns the body over learns it as a
    fall (the value still learns the exact task). Only tasks with a free torso (Ant)."""
    termination_gradient: bool = False
    """Train the prior with the termination gradient of search.termination_gradient: through
    the model, a step out of the healthy ranges then costs it the value it loses, not only
    that step's soft health. Needs value.enabled."""
    updates_per_step: float = 1.0
    """actor-critic: updates per env step collected since the last fit (all steps, the
    random ones included, at the first fit)."""
    critic_warmup: int = 250
    """actor-critic: critic-only updates after each model fit, before the actor moves."""
    rollout_horizon: int = 20
    """actor-critic: steps of each distribution rollout that fills the start-state buffer."""
    rollout_every: int = 20
    """actor-critic: updates between distribution rollouts (10 rounds are kept)."""
    critics: int = 2
    """actor-critic: Q critics in the ensemble (targets take their minimum)."""
    hard_health: bool = False
    """actor-critic: pay the healthy bonus exactly while healthy, as the env does, instead of
    through the planners' soft health indicator (the rollouts' terminations carry the fall)."""
    normalize_obs: bool = False
    """actor-critic: the actor and the critics see observations standardised with the
    buffer's statistics, refitted at each fit (DHMBPO does, with running statistics)."""
    critic_layer_norm: bool = False
    """actor-critic: DHMBPO's critics, a LayerNorm before every layer after the first and a
    zero-initialised head."""
    critic_dropout: float = 0.0
    """actor-critic: dropout on the critics' hidden layers while they learn (DHMBPO: 0.001)."""
    rollout_states: int = 0
    """actor-critic: start states each distribution rollout adds at least, in batches of
    batch_size rows (0: one batch; DHMBPO: 5120)."""


@dataclass
class TrainConfig:
    """One model-based RL run (Algorithm 1): random data, then train model / act by MPC."""

    env: str = "InvertedPendulum-v5"
    """Gymnasium env id with a registered task."""
    planner: str = "grad"
    """shooting, cem, mppi, grad or cem-grad."""
    model: str = "mlp"
    """mlp (one network), ensemble (deterministic) or pets (probabilistic ensemble)."""
    horizon: int = 10
    """Planning horizon H."""
    total_steps: int = 5000
    """Training env steps in all, random seed data included."""
    seed: int = 0
    """Seeds the env, torch, numpy and the planner."""
    device: str = "auto"
    """auto, cpu or cuda (cuda:N)."""
    random_steps: int = 1000
    """Env steps of uniform random actions before the first model."""
    steps_per_iteration: int = 1000
    """MPC env steps collected between model trainings."""
    eval_episodes: int = 3
    """Noise-free MPC episodes on a separate env after each evaluated iteration."""
    eval_every: int = 1
    """Evaluate after every N-th iteration and after the last one (the rows between have
    NaN evaluation columns); evaluations of long episodes can cost more than training."""
    exploration_noise: float = 0.0
    """Gaussian noise on training actions, in units of half the action range."""
    reset_below_upright: float | None = None
    """End a training episode early, as a truncation (the value still bootstraps through it),
    once the torso tilts past this bound (search.min_upright's cosine; 0: on its side). A flipped
    Ant lies healthy on its back to the time limit and never walks again, so those steps teach
    nothing; evaluation episodes keep the env's rules. Only tasks with a free torso; None: off."""
    stop_at_return: float | None = None
    """Stop once the mean evaluation return reaches this."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for gym.make (e.g. include_cfrc_ext_in_observation)."""
    dynamics: ModelConfig = field(default_factory=ModelConfig)
    search: PlannerConfig = field(default_factory=PlannerConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    threads: int = 1
    """CPU threads for torch; small models plan fastest on one (0 keeps torch's default)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the tensorboard extra)."""
    snapshots: bool = False
    """Keep the checkpoint of every evaluated controller as snapshots/step_NNNNNNN.pt (hard
    links, so nothing is written twice, but each keeps its 8 MB on Ant: 320 MB for 200k steps
    evaluated every 5k), to evaluate or ablate it later with --at-steps: what the run did
    before a collapse, not only its last state."""
    label: str | None = None
    """Group name in comparisons; default 'mbrl PLANNER MODEL H<horizon>'."""

    def validate(self) -> TrainConfig:
        """Raise ConfigError on the first bad value; returns self."""
        if self.planner not in PLANNER_NAMES:
            raise ConfigError(f"unknown planner {self.planner!r}; choose one of {PLANNER_NAMES}")
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"unknown model {self.model!r}; choose one of {MODEL_KINDS}")
        positive = ("horizon", "total_steps", "steps_per_iteration", "eval_episodes", "eval_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.random_steps < 0 or self.random_steps >= self.total_steps:
            raise ConfigError(
                f"random_steps ({self.random_steps}) must be in [0, total_steps "
                f"({self.total_steps}))"
            )
        self.dynamics.validate()
        if not self.exploration_noise >= 0 or self.threads < 0:
            raise ConfigError(
                f"exploration_noise and threads cannot be negative, got {self.exploration_noise} "
                f"and {self.threads} (threads 0 keeps torch's default)"
            )
        self.search.validate()
        if not 0 < self.search.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.search.gamma}")
        if self.search.replan_every > self.horizon:
            raise ConfigError(
                f"search.replan_every ({self.search.replan_every}) cannot exceed the horizon "
                f"({self.horizon}): lower it with --search.replan-every (a preset may set it)"
            )
        if self.search.disagreement_penalty < 0:
            raise ConfigError("search.disagreement_penalty must be >= 0")
        if not self.search.safety_margin >= 0:
            raise ConfigError(f"search.safety_margin must be >= 0, got {self.search.safety_margin}")
        for name, bound in (
            ("search.min_upright", self.search.min_upright),
            ("policy.min_upright", self.policy.min_upright),
            ("reset_below_upright", self.reset_below_upright),
        ):
            if bound is not None and not -1 < bound < 1:
                raise ConfigError(
                    f"{name} is a cosine of the torso's tilt: it must be in (-1, 1), got {bound}"
                )
        if self.search.disagreement_penalty and (
            self.model == "mlp" or self.search.propagation != Propagation.EXPECTATION
        ):
            raise ConfigError(
                "search.disagreement_penalty needs an ensemble (--model ensemble or pets) "
                "and --search.propagation expectation"
            )
        v = self.value
        if min(v.ensemble_size, v.hidden_size, v.num_layers, v.batch_size, v.updates) <= 0:
            raise ConfigError("value sizes, batch_size and updates must be positive")
        if v.td_steps <= 0 or not 0 <= v.td_lambda <= 1:
            raise ConfigError("need value.td_steps > 0 and value.td_lambda in [0, 1]")
        if v.expansion < 0 or (v.expansion and (not self.policy.enabled or v.td_steps > 1)):
            raise ConfigError(
                "value.expansion imagines steps under the policy prior: it needs "
                "--policy.enabled and value.td_steps 1 (and cannot be negative)"
            )
        if v.kind == ValueKind.LQR and (v.expansion or v.td_steps > 1):
            raise ConfigError(
                "value.expansion and value.td_steps shape a learned critic's TD targets; "
                "value.kind lqr learns nothing: drop them or use value.kind critic"
            )
        _check_ranges(
            "value",
            ("gamma", v.gamma, 0 < v.gamma < 1, "in (0, 1)"),
            ("tau", v.tau, 0 < v.tau <= 1, "in (0, 1]"),
            ("lr", v.lr, v.lr > 0, "> 0"),
            ("pessimism", v.pessimism, v.pessimism >= 0, ">= 0"),
        )
        pi = self.policy
        if min(pi.hidden_size, pi.num_layers, pi.batch_size, pi.updates, pi.horizon or 1) <= 0:
            raise ConfigError("policy sizes, horizon, batch_size and updates must be positive")
        if pi.check_horizon < 0 or pi.check_tolerance < 0:
            raise ConfigError("policy.check_horizon and policy.check_tolerance cannot be negative")
        if pi.check_against_best and pi.check_horizon == 0:
            raise ConfigError(
                "policy.check_against_best needs the start-state check; set policy.check_horizon "
                "(e.g. --policy.check-horizon 100)"
            )
        if not pi.safety_margin >= 0:
            raise ConfigError(f"policy.safety_margin must be >= 0, got {pi.safety_margin}")
        if pi.collect and not pi.enabled:
            raise ConfigError("policy.collect acts with the policy prior: add --policy.enabled")
        for part, on in (
            ("search", self.search.termination_gradient),
            ("policy", pi.termination_gradient),
        ):
            if on and part == "policy" and not pi.enabled:
                raise ConfigError(
                    "policy.termination_gradient trains the policy prior: add --policy.enabled"
                )
            if on and not self.value.enabled:
                raise ConfigError(
                    f"{part}.termination_gradient weighs a termination by the value it loses: "
                    "it needs a terminal value (add --value.enabled)"
                )
        if pi.kind == PolicyKind.ACTOR_CRITIC:
            _check_actor_critic(self)
        _check_ranges(
            "policy",
            ("gamma", pi.gamma, 0 < pi.gamma <= 1, "in (0, 1]"),
            ("lr", pi.lr, pi.lr > 0, "> 0"),
            ("share", pi.share, 0 <= pi.share <= 1, "in [0, 1]"),
            ("noise", pi.noise, pi.noise >= 0, ">= 0"),
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_fields(self, changes: dict[str, Any]) -> TrainConfig:
        """A copy with dotted fields set (``horizon``, ``search.lr``, ``dynamics.hidden_size``).

        An unknown field or a value of the wrong type is a ConfigError; call ``validate``
        for the checks across fields.
        """
        data = self.to_dict()
        for path, value in changes.items():
            owner, name = _field_owner(path)
            hint = typing.get_type_hints(owner)[name]
            if not _has_type(value, hint):
                raise ConfigError(f"{path} must be of type {_type_name(hint)}, got {value!r}")
            *parents, leaf = path.split(".")
            target = data
            for parent in parents:
                target = target[parent]
            target[leaf] = value.value if isinstance(value, Enum) else value
        return TrainConfig.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) dict; unknown keys are an error."""
        check_run_kind(data, None)
        data = dict(data)
        try:
            sections = {}
            for name, section in SECTIONS.items():
                fields = dict(data.pop(name, {}))
                for field_name, kind in _ENUM_FIELDS.get(name, {}).items():
                    if field_name in fields:  # JSON holds the value; the dataclass the member
                        fields[field_name] = kind(fields[field_name])
                sections[name] = section(**fields)
            return cls(**data, **sections)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad configuration: {exc}") from exc

    def save(self, path: str | Path) -> None:
        """Write as JSON, atomically: a kill leaves the old file or the new one, not half."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config_file(path))


_ENUM_FIELDS: dict[str, dict[str, type[Enum]]] = {
    "search": {"propagation": Propagation, "precision": Precision},
    "value": {"kind": ValueKind},
    "policy": {"kind": PolicyKind},
}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The JSON object in a config file, or a ConfigError in one line naming the file and
    what is wrong with it (missing, unreadable, not JSON, not an object)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; a run folder keeps its settings there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "restore it from a copy, or start a new run"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not a config object")
    return data


def check_run_kind(data: dict[str, Any], expected: str | None) -> None:
    """Raise ConfigError unless the ``config.json`` dict ``data`` is of the run kind ``expected``
    (its ``kind`` key: "baseline", "mbpo", or none for ``dynaplan train``), naming its command."""
    found = data.get("kind")
    if found != expected:
        command = f"dynaplan {found}" if found else "dynaplan train"
        raise ConfigError(
            f"the folder holds a `{command}` run, which this command does not take; it is "
            f"continued with `{command} --resume` (evaluate and compare take every kind)"
        )


def _check_actor_critic(config: TrainConfig) -> None:
    """The cross-field rules of ``policy.kind actor-critic``."""
    pi = config.policy
    if config.value.enabled:
        raise ConfigError(
            "policy.kind actor-critic learns its own Q critics, whose soft value ends the plans: "
            "drop --value.enabled"
        )
    if (
        pi.check_horizon
        or pi.safety_margin
        or pi.min_upright is not None
        or pi.termination_gradient
    ):
        raise ConfigError(
            "policy.check_horizon, safety_margin, min_upright and termination_gradient shape the "
            "deterministic prior; drop them with policy.kind actor-critic"
        )
    _check_ranges(
        "policy",
        ("gamma", pi.gamma, 0 < pi.gamma < 1, "in (0, 1) for actor-critic"),
        ("updates_per_step", pi.updates_per_step, pi.updates_per_step > 0, "> 0"),
        ("critic_warmup", pi.critic_warmup, pi.critic_warmup >= 0, ">= 0"),
        ("rollout_horizon", pi.rollout_horizon, pi.rollout_horizon > 0, "> 0"),
        ("rollout_every", pi.rollout_every, pi.rollout_every > 0, "> 0"),
        ("critics", pi.critics, pi.critics > 0, "> 0"),
        ("critic_dropout", pi.critic_dropout, 0 <= pi.critic_dropout < 1, "in [0, 1)"),
        ("rollout_states", pi.rollout_states, pi.rollout_states >= 0, ">= 0"),
    )


def _check_ranges(section: str, *checks: tuple[str, float, bool, str]) -> None:
    """Raise ConfigError naming the first ``(field, value, ok, allowed)`` that is not ok."""
    for name, value, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{section}.{name} must be {allowed}, got {value}")


SECTIONS: dict[str, type] = {  # nested sections, addressed by dotted paths (search.lr)
    "dynamics": ModelConfig,
    "search": PlannerConfig,
    "value": ValueConfig,
    "policy": PolicyConfig,
}


def _field_owner(path: str) -> tuple[type, str]:
    """The dataclass that holds the dotted field ``path``, and the field's name."""
    section, _, name = path.rpartition(".")
    owner = SECTIONS.get(section) if section else TrainConfig
    if (
        owner is None
        or name not in {f.name for f in dataclasses.fields(owner)}
        or (owner is TrainConfig and name in SECTIONS)
    ):
        raise ConfigError(
            f"unknown config field {path!r}; use a TrainConfig field (horizon, planner, ...) "
            "or dynamics.FIELD / search.FIELD / value.FIELD (see dynaplan train --help)"
        )
    return owner, name


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (an int is also a float, a bool is not)."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return value in {member.value for member in hint} or isinstance(value, hint)
    origin = typing.get_origin(hint) or hint
    return isinstance(value, origin)


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and issubclass(hint, Enum):
        return " or ".join(repr(member.value) for member in hint)
    return getattr(hint, "__name__", str(hint))


RECIPES: dict[str, str] = {
    "InvertedPendulum-v5": "pendulum",
    "Hopper-v5": "hopper-value-prior",
    "Ant-v5": "ant-value-prior",
}
"""The preset ``dynaplan train --env ENV`` starts from when no --preset is given: each env's
best measured recipe (``--preset none`` gives the bare defaults)."""


def recipe_for(env_id: str) -> str | None:
    """The preset of ``env_id``'s recipe, or None where it has none (:data:`RECIPES`)."""
    return RECIPES.get(env_id)


def presets() -> list[str]:
    """Names of the presets shipped in ``dynaplan/presets``."""
    return sorted(path.stem for path in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> TrainConfig:
    """The preset ``name`` (shipped, or a path to a preset file of one's own) as a full config
    (unset fields keep their defaults)."""
    if name in presets():
        return config_from_dict(read_config_file(PRESET_DIR / f"{name}.json"))
    if name.endswith(".json") or os.sep in name:
        return config_from_dict(read_config_file(name))
    raise ConfigError(
        f"unknown preset {name!r}; choose one of {presets()} or give a path to a .json file"
    )


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A config mapping whose optional ``preset`` key names the preset it starts from (else
    the defaults); its other keys, sections included, change that start's fields."""
    data = dict(data)
    preset = data.pop("preset", None)
    flat = {}
    for name, value in data.items():
        if name in SECTIONS and isinstance(value, dict):
            flat.update({f"{name}.{key}": inner for key, inner in value.items()})
        else:
            flat[name] = value
    return (load_preset(preset) if preset else TrainConfig()).with_fields(flat)
