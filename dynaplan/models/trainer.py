"""Fitting a :class:`DynamicsModel` to a replay buffer.

Each member trains on its own bootstrap of the training episodes; validation is on
held-out whole episodes. Early stopping keeps, per member, the weights of its best
validation epoch. The data sits on the device once per fit; epochs only permute indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models.ensemble import DynamicsModel


@dataclass
class FitResult:
    """What one call of :meth:`ModelTrainer.fit` achieved."""

    train_loss: float
    """Mean training loss of the last epoch (MSE or Gaussian NLL, normalised units)."""
    val_loss: float
    """Mean validation MSE of the elites at their best epoch (NaN without validation data)."""
    epochs: int


class ModelTrainer:
    """Owns the optimiser of one model, so training can continue across loop iterations."""

    def __init__(self, model: DynamicsModel, lr: float = 1e-3, weight_decay: float = 1e-5) -> None:
        if lr <= 0 or weight_decay < 0:
            raise ConfigError(f"need lr > 0 and weight_decay >= 0, got {lr}, {weight_decay}")
        self.model = model
        self.lr = lr
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def fit(
        self,
        buffer: ReplayBuffer,
        rng: np.random.Generator,
        max_epochs: int = 50,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        patience: int = 5,
        max_updates: int | None = None,
        progress: bool = False,
    ) -> FitResult:
        """Train on ``buffer`` until validation stops improving for ``patience`` epochs."""
        if len(buffer) == 0:
            raise ConfigError("cannot train a model on an empty buffer; collect data first")
        model = self.model
        device = next(model.parameters()).device
        train_idx, val_idx = buffer.split(val_fraction, rng)
        train = buffer.batch(train_idx, device)
        _check_finite(train.obs, train.action, train.next_obs)
        model.fit_normalizers(train.obs, train.action, train.next_obs)
        x_train = model.normalized_inputs(train.obs, train.action)
        y_train = model.target_norm.normalize(train.next_obs - train.obs)
        val = buffer.batch(val_idx, device) if len(val_idx) else None

        num_members, n = model.ensemble_size, len(train_idx)
        bootstrap = torch.as_tensor(rng.integers(0, n, size=(num_members, n)), device=device)
        if num_members == 1:
            bootstrap = torch.arange(n, device=device)[None]
        best_val = torch.full((num_members,), float("inf"), device=device)
        best_params = {name: p.detach().clone() for name, p in model.named_parameters()}
        stale, updates, epoch, train_loss = 0, 0, 0, float("nan")
        bar = tqdm(range(max_epochs), desc="model", leave=False, disable=not progress)
        for epoch in bar:
            model.train()
            order = torch.as_tensor(rng.permutation(n), device=device)
            losses = []
            for batch_number, start in enumerate(range(0, n, batch_size)):
                rows = bootstrap[:, order[start : start + batch_size]]  # [E, b]
                loss = self._loss(x_train[rows], y_train[rows]).sum()
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"model training hit a non-finite loss ({loss.item()}) at epoch {epoch}, "
                        f"batch {batch_number}; lower the model learning rate (now {self.lr}) "
                        "or check the environment's observations for extreme values"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item() / num_members)
                updates += 1
            train_loss = float(np.mean(losses))
            if val is None:
                bar.set_postfix(train=f"{train_loss:.4f}")
                if max_updates is not None and updates >= max_updates:
                    break
                continue
            val_mse = self.evaluate(val.obs, val.action, val.next_obs)
            improved = val_mse < best_val * (1 - 1e-3)
            if improved.any():
                for name, param in model.named_parameters():
                    best_params[name][improved] = param.detach()[improved]
                best_val = torch.where(improved, val_mse, best_val)
                stale = 0
            else:
                stale += 1
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{best_val.mean().item():.4f}")
            if stale >= patience or (max_updates is not None and updates >= max_updates):
                break
        bar.close()
        if val is None:
            return FitResult(train_loss, float("nan"), epoch + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(best_params[name])
        elites = torch.argsort(best_val)[: model.num_elites]
        model.elites.copy_(elites.sort().values)
        return FitResult(train_loss, best_val[elites].mean().item(), epoch + 1)

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-member loss ``[E]`` for inputs ``x: [E, b, S + A]``, targets ``y: [E, b, S]``."""
        mean, logvar = self.model(x)
        if logvar is None:
            return ((mean - y) ** 2).mean((1, 2))
        nll = ((mean - y) ** 2 * (-logvar).exp() + logvar).mean((1, 2))
        model = self.model
        bound_penalty = 0.01 * (model.max_logvar.sum((1, 2)) - model.min_logvar.sum((1, 2)))
        return nll + bound_penalty

    @torch.no_grad()
    def evaluate(self, obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        """Validation MSE per member ``[E]`` of the normalised delta on ``[N, ·]`` data."""
        model = self.model
        model.eval()
        x = model.normalized_inputs(obs, action)
        y = model.target_norm.normalize(next_obs - obs)
        mean, _ = model(x.expand(model.ensemble_size, *x.shape))
        return ((mean - y) ** 2).mean((1, 2))

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        load_optimizer_state(self.optimizer, state["optimizer"])


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimizer's moments and step counts from ``state`` but keep its own settings
    (lr, weight decay): those come from the config, which a branch of a run may change."""
    settings = [
        {k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)


def _check_finite(*tensors: Tensor) -> None:
    for tensor in tensors:
        bad = ~torch.isfinite(tensor).all(-1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise TrainingDivergedError(
                f"the training data holds non-finite values (first at training row {row}); "
                "the environment returned NaN/inf observations — check its configuration"
            )
