"""A vectorised ensemble of MLP dynamics models, ``s' = s + f(s, a)``.

One module covers the paper's variants: a single deterministic MLP (``E = 1``),
a deterministic ensemble, and a probabilistic ensemble (PETS: mean and log-variance,
soft-bounded). Members are never looped over: every layer is one batched matmul
over weights of shape ``[E, in, out]``; every parameter has the leading dimension ``E``.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.models.normalizer import Normalizer
from dynaplan.types import Propagation

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


class EnsembleLinear(nn.Module):
    """``E`` independent linear layers in one ``baddbmm``: ``[E, N, in] -> [E, N, out]``."""

    def __init__(self, ensemble_size: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor, members: Tensor | None = None) -> Tensor:
        """``x: [M, N, in]``; ``members`` (``[M]`` indices) selects which members run."""
        if members is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class DynamicsModel(nn.Module):
    """Ensemble predicting normalised state deltas from normalised ``(obs, action)``.

    Args:
        obs_dim, act_dim: observation and action sizes ``S``, ``A``.
        ensemble_size: members ``E`` (1 = the paper's single network).
        hidden_size, num_layers: width and number of hidden layers.
        activation: one of ``ACTIVATIONS``.
        probabilistic: predict a Gaussian (mean, log-variance) per member, as in PETS.
        num_elites: members used for prediction after training (the best on validation).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        ensemble_size: int = 1,
        hidden_size: int = 200,
        num_layers: int = 3,
        activation: str = "silu",
        probabilistic: bool = False,
        num_elites: int | None = None,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        if min(obs_dim, act_dim, ensemble_size, hidden_size, num_layers) <= 0:
            raise ConfigError("model sizes (obs, act, ensemble, hidden, layers) must be positive")
        num_elites = ensemble_size if num_elites is None else num_elites
        if not 1 <= num_elites <= ensemble_size:
            raise ConfigError(f"num_elites must be in [1, {ensemble_size}], got {num_elites}")
        self.hparams = dict(
            obs_dim=obs_dim,
            act_dim=act_dim,
            ensemble_size=ensemble_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            activation=activation,
            probabilistic=probabilistic,
            num_elites=num_elites,
        )
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.probabilistic = probabilistic
        sizes = [obs_dim + act_dim] + [hidden_size] * num_layers
        self.hidden = nn.ModuleList(
            EnsembleLinear(ensemble_size, n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)
        )
        self.activation = ACTIVATIONS[activation]()
        out_size = 2 * obs_dim if probabilistic else obs_dim
        self.head = EnsembleLinear(ensemble_size, hidden_size, out_size)
        if probabilistic:
            self.max_logvar = nn.Parameter(torch.full((ensemble_size, 1, obs_dim), 0.5))
            self.min_logvar = nn.Parameter(torch.full((ensemble_size, 1, obs_dim), -10.0))
        self.input_norm = Normalizer(obs_dim + act_dim)
        self.target_norm = Normalizer(obs_dim)
        self.register_buffer("elites", torch.arange(num_elites))

    # -- the network -------------------------------------------------------------------------

    def forward(self, x: Tensor, members: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Normalised delta mean and log-variance for normalised inputs.

        Args:
            x: ``[M, N, S + A]`` normalised inputs, one slice per member that runs.
            members: ``[M]`` member indices, or None for all ``E``.

        Returns:
            ``(mean [M, N, S], logvar [M, N, S] or None)`` in normalised target units.
        """
        for layer in self.hidden:
            x = self.activation(layer(x, members))
        out = self.head(x, members)
        if not self.probabilistic:
            return out, None
        mean, raw_logvar = out.chunk(2, dim=-1)
        max_logvar = self.max_logvar if members is None else self.max_logvar[members]
        min_logvar = self.min_logvar if members is None else self.min_logvar[members]
        logvar = max_logvar - F.softplus(max_logvar - raw_logvar)
        logvar = min_logvar + F.softplus(logvar - min_logvar)
        return mean, logvar

    def normalized_inputs(self, obs: Tensor, action: Tensor) -> Tensor:
        """``[..., S + A]`` standardised model inputs."""
        return self.input_norm.normalize(torch.cat([obs, action], dim=-1))

    def fit_normalizers(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> None:
        """Fit input and delta-target statistics on ``[N, S]``/``[N, A]`` data."""
        self.input_norm.fit(torch.cat([obs, action], dim=-1))
        self.target_norm.fit(next_obs - obs)

    # -- prediction ------------------------------------------------------------------------------

    def step(
        self,
        obs: Tensor,
        action: Tensor,
        propagation: Propagation = Propagation.EXPECTATION,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Predicted next observation ``[N, S]`` for ``obs: [N, S]``, ``action: [N, A]``.

        ``EXPECTATION`` averages the elite members' means. ``TSINF`` sends row ``i`` to
        elite ``i % num_elites`` (so lay particles out as ``[B, P]`` with ``P`` a multiple
        of ``num_elites``); ``TS1`` draws a fresh member per row and step (any number of
        rows). A probabilistic model samples its Gaussian in the TS modes. Differentiable in
        ``action``.
        """
        if obs.ndim != 2 or action.ndim != 2:
            raise ValueError(
                f"step expects obs [N, S], action [N, A]; got {obs.shape}, {action.shape}"
            )
        x = self.normalized_inputs(obs, action)
        n, m = x.shape[0], self.num_elites
        if propagation == Propagation.EXPECTATION:
            delta = self._elite_means(x).mean(0)
        else:
            if n % m and propagation == Propagation.TSINF:
                raise ValueError(f"{propagation} needs rows ({n}) divisible by the elites ({m})")
            order = (
                torch.randperm(n, generator=generator, device=x.device)
                if propagation == Propagation.TS1
                else None
            )
            padded = -(-n // m) * m  # TS1 pads the shuffled rows up to a multiple of m
            if order is not None:
                # pad by repeating rows (the padding's predictions are dropped below)
                x = x[order][torch.arange(padded, device=x.device) % n]
            mean, logvar = self(x.view(padded // m, m, -1).transpose(0, 1), self._elite_indices())
            if logvar is not None:
                noise = torch.randn(mean.shape, generator=generator, device=x.device)
                mean = mean + noise * (0.5 * logvar).exp()
            delta = mean.transpose(0, 1).reshape(padded, -1)[:n]
            if order is not None:
                delta = torch.empty_like(delta).index_copy_(0, order, delta)
        return obs + self.target_norm.denormalize(delta)

    def step_with_disagreement(self, obs: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        """The ``EXPECTATION`` step ``[N, S]`` and the elites' disagreement ``[N]`` about it.

        Disagreement is the standard deviation across elite members of their predicted
        (normalised) deltas, averaged over state dimensions: zero for a single network, large
        where the members extrapolate differently, i.e. off the training data.
        """
        means = self._elite_means(self.normalized_inputs(obs, action))  # [m, N, S]
        disagreement = means.std(0, unbiased=False).mean(-1)
        return obs + self.target_norm.denormalize(means.mean(0)), disagreement

    def _elite_means(self, x: Tensor) -> Tensor:
        """Every elite's normalised delta mean ``[m, N, S]`` for normalised inputs ``[N, S+A]``."""
        mean, _ = self(x.expand(self.num_elites, *x.shape), self._elite_indices())
        return mean

    def _elite_indices(self) -> Tensor | None:
        """The elites' member indices, or None when every member is an elite."""
        return None if self.num_elites == self.ensemble_size else self.elites

    # -- persistence -----------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write constructor arguments, weights, normalisers and elites to one file, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"hparams": self.hparams, "state_dict": self.state_dict()}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> DynamicsModel:
        """Read a model written by :meth:`save` without executing any code from the file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no model file at {path}")
        try:
            data = torch.load(path, map_location=device, weights_only=True)
            model = cls(**data["hparams"])
            model.load_state_dict(data["state_dict"])
        except (RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as exc:
            raise CheckpointError(f"{path} is not a readable dynaplan model file ({exc})") from exc
        return model.to(device)
