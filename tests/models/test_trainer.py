import numpy as np
import pytest
import torch

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import ConfigError, TrainingDivergedError
from dynaplan.models import DynamicsModel, ModelTrainer


def linear_system(num_episodes: int = 20, length: int = 25, seed: int = 0) -> ReplayBuffer:
    """``s' = s + 0.1 * [a, sin(s0)]`` — smooth, known dynamics."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(3, 2)
    for episode in range(num_episodes):
        s = rng.normal(size=3)
        for t in range(length):
            a = rng.uniform(-1, 1, 2)
            s2 = s + 0.1 * np.concatenate([a, np.sin(s[:1])])
            buffer.add(s, a, 0.0, s2, False, t == length - 1, episode)
            s = s2
    return buffer


@pytest.mark.parametrize("ensemble_size,probabilistic", [(1, False), (3, False), (3, True)])
def test_fit_learns_known_dynamics(ensemble_size, probabilistic):
    torch.manual_seed(0)
    buffer = linear_system()
    model = DynamicsModel(
        3, 2, ensemble_size, hidden_size=32, num_layers=2, probabilistic=probabilistic
    )
    result = ModelTrainer(model, lr=3e-3).fit(buffer, np.random.default_rng(0), max_epochs=60)
    assert np.isfinite(result.val_loss) and result.val_loss < 0.2
    obs = torch.randn(50, 3)
    act = torch.rand(50, 2) * 2 - 1
    truth = obs + 0.1 * torch.cat([act, torch.sin(obs[:, :1])], 1)
    error = (model.step(obs, act) - truth).abs().mean()
    no_change_error = (truth - obs).abs().mean()
    assert error < 0.3 * no_change_error, f"{error:.4f} vs {no_change_error:.4f}"


def test_early_stopping_and_elites():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, 4, hidden_size=16, num_layers=1, num_elites=2)
    trainer = ModelTrainer(model)
    result = trainer.fit(linear_system(), np.random.default_rng(1), max_epochs=500, patience=2)
    assert result.epochs < 500
    assert model.elites.shape == (2,)
    assert len(set(model.elites.tolist())) == 2


def test_max_updates_caps_training():
    model = DynamicsModel(3, 2, hidden_size=8, num_layers=1)
    result = ModelTrainer(model).fit(
        linear_system(), np.random.default_rng(0), max_epochs=100, batch_size=500, max_updates=2
    )
    assert result.epochs == 2


def test_non_finite_data_stops_with_a_clear_message():
    buffer = linear_system(num_episodes=3)
    buffer.next_obs[5, 1] = np.nan
    with pytest.raises(TrainingDivergedError, match="non-finite values"):
        ModelTrainer(DynamicsModel(3, 2)).fit(buffer, np.random.default_rng(0))


def test_diverging_loss_names_epoch_and_batch():
    torch.manual_seed(0)
    model = DynamicsModel(3, 2, hidden_size=8, num_layers=1)
    trainer = ModelTrainer(model, lr=1e30)
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+, batch \d+"):
        trainer.fit(linear_system(), np.random.default_rng(0), max_epochs=50, batch_size=16)


def test_empty_buffer_and_bad_rates_are_config_errors():
    with pytest.raises(ConfigError, match="empty buffer"):
        ModelTrainer(DynamicsModel(3, 2)).fit(ReplayBuffer(3, 2), np.random.default_rng(0))
    with pytest.raises(ConfigError):
        ModelTrainer(DynamicsModel(3, 2), lr=0)
