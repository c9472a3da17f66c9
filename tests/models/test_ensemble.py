import numpy as np
import pytest
import torch

from dynaplan.errors import CheckpointError, ConfigError
from dynaplan.models import DynamicsModel
from dynaplan.types import Propagation


def model(**kwargs) -> DynamicsModel:
    torch.manual_seed(0)
    defaults = dict(obs_dim=3, act_dim=2, ensemble_size=4, hidden_size=16, num_layers=2)
    return DynamicsModel(**{**defaults, **kwargs})


def test_members_are_independent_networks():
    """Member e of the batched forward equals a plain MLP built from member e's weights."""
    m = model()
    x = torch.randn(4, 5, 5)
    mean, logvar = m(x)
    assert mean.shape == (4, 5, 3) and logvar is None
    for e in range(4):
        h = x[e]
        for layer in m.hidden:
            h = torch.nn.functional.silu(h @ layer.weight[e] + layer.bias[e])
        torch.testing.assert_close(mean[e], h @ m.head.weight[e] + m.head.bias[e])


def test_step_adds_the_denormalised_delta():
    m = model(ensemble_size=1)
    m.target_norm.mean.fill_(2.0)
    m.target_norm.std.fill_(0.0 + 1e-6)
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    torch.testing.assert_close(m.step(obs, act), obs + 2.0, atol=1e-4, rtol=0)


def test_tsinf_uses_member_row_mod_elites():
    m = model()
    obs, act = torch.randn(8, 3), torch.randn(8, 2)
    out = m.step(obs, act, Propagation.TSINF)
    x = m.normalized_inputs(obs, act)
    for row in range(8):
        mean, _ = m(x[row].view(1, 1, -1), torch.tensor([row % 4]))
        expected = obs[row] + m.target_norm.denormalize(mean[0, 0])
        torch.testing.assert_close(out[row], expected)


def test_ts1_is_a_per_step_permutation_of_members():
    m = model()
    obs, act = torch.randn(8, 3), torch.randn(8, 2)
    generator = torch.Generator().manual_seed(1)
    out = m.step(obs, act, Propagation.TS1, generator)
    x = m.normalized_inputs(obs, act)
    all_members, _ = m(x.expand(4, 8, 5))
    candidates = obs + m.target_norm.denormalize(all_members)  # [E, N, S]
    # every row equals one member's prediction for that row
    matches = (candidates - out).abs().amax(-1) < 1e-5  # [E, N]
    assert matches.any(0).all()
    assert len(set(matches.float().argmax(0).tolist())) > 1  # not all from one member


def test_expectation_is_the_mean_of_elite_members():
    m = model(num_elites=2)
    m.elites.copy_(torch.tensor([1, 3]))
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    x = m.normalized_inputs(obs, act)
    mean, _ = m(x.expand(4, 5, 5))
    expected = obs + m.target_norm.denormalize(mean[[1, 3]].mean(0))
    torch.testing.assert_close(m.step(obs, act), expected)


def test_disagreement_is_the_elites_spread_and_zero_for_identical_members():
    m = model(num_elites=2)
    m.elites.copy_(torch.tensor([1, 3]))
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    next_obs, disagreement = m.step_with_disagreement(obs, act)
    torch.testing.assert_close(next_obs, m.step(obs, act))
    mean, _ = m(m.normalized_inputs(obs, act).expand(4, 5, 5))
    expected = mean[[1, 3]].std(0, unbiased=False).mean(-1)
    torch.testing.assert_close(disagreement, expected)
    assert disagreement.shape == (5,) and (disagreement > 0).all()
    with torch.no_grad():
        for parameter in m.parameters():
            parameter.copy_(parameter[:1].expand_as(parameter))  # every member = member 0
    assert m.step_with_disagreement(obs, act)[1].abs().max() < 1e-6


def test_probabilistic_log_variance_stays_in_its_soft_bounds():
    m = model(probabilistic=True)
    _, logvar = m(100 * torch.randn(4, 50, 5))
    assert torch.all(logvar <= m.max_logvar + 1e-3)  # soft: softplus overshoots a little
    assert torch.all(logvar >= m.min_logvar - 1e-3)


def test_probabilistic_sampling_is_seeded():
    m = model(probabilistic=True)
    obs, act = torch.randn(8, 3), torch.randn(8, 2)
    a = m.step(obs, act, Propagation.TSINF, torch.Generator().manual_seed(3))
    b = m.step(obs, act, Propagation.TSINF, torch.Generator().manual_seed(3))
    c = m.step(obs, act, Propagation.TSINF, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_step_is_differentiable_in_actions():
    m = model(probabilistic=True)
    act = torch.randn(8, 2, requires_grad=True)
    m.step(torch.randn(8, 3), act, Propagation.TS1).sum().backward()
    assert torch.isfinite(act.grad).all() and act.grad.abs().sum() > 0


def test_save_and_load_round_trip(tmp_path):
    m = model(probabilistic=True, num_elites=3)
    m.input_norm.fit(torch.randn(20, 5))
    m.elites.copy_(torch.tensor([0, 2, 3]))
    m.save(tmp_path / "model.pt")
    loaded = DynamicsModel.load(tmp_path / "model.pt")
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    torch.testing.assert_close(loaded.step(obs, act), m.step(obs, act))
    assert loaded.hparams == m.hparams


def test_load_rejects_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="no model file"):
        DynamicsModel.load(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        DynamicsModel.load(tmp_path / "bad.pt")


@pytest.mark.parametrize(
    "kwargs", [dict(activation="gelu2"), dict(hidden_size=0), dict(num_elites=9)]
)
def test_bad_sizes_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        model(**kwargs)


def test_odd_row_counts_are_rejected_for_ts_modes():
    with pytest.raises(ValueError, match="divisible"):
        model().step(torch.zeros(6, 3), torch.zeros(6, 2), Propagation.TSINF)
    assert np.isfinite(model().step(torch.zeros(6, 3), torch.zeros(6, 2)).detach().numpy()).all()
