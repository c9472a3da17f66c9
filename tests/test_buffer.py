import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynaplan.buffer import ReplayBuffer
from dynaplan.errors import CheckpointError


def filled(num_episodes: int = 6, length: int = 7, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(obs_dim=3, act_dim=2, capacity=4)
    for episode in range(num_episodes):
        for t in range(length):
            buffer.add(
                rng.normal(size=3),
                rng.normal(size=2),
                rng.normal(),
                rng.normal(size=3),
                terminated=t == length - 1 and episode % 2 == 0,
                truncated=t == length - 1 and episode % 2 == 1,
                episode=episode,
            )
    return buffer


def test_grows_past_its_initial_capacity_and_keeps_rows():
    buffer = filled()
    assert len(buffer) == 42
    assert buffer.obs.shape == (42, 3) and buffer.action.shape == (42, 2)
    assert buffer.num_episodes == 6


def test_episode_starts_are_the_first_row_of_each_episode():
    buffer = filled(num_episodes=4, length=5)
    np.testing.assert_array_equal(buffer.episode_starts(), [0, 5, 10, 15])
    assert ReplayBuffer(obs_dim=3, act_dim=2).episode_starts().size == 0


def test_npz_round_trip_is_exact(tmp_path):
    buffer = filled()
    buffer.save(tmp_path / "b.npz")
    loaded = ReplayBuffer.load(tmp_path / "b.npz")
    for column in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode"):
        np.testing.assert_array_equal(getattr(loaded, column), getattr(buffer, column))


def test_last_copies_the_most_recent_rows_and_leaves_the_buffer_alone():
    buffer = filled()
    part = buffer.last(10)
    assert len(part) == 10
    for column in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode"):
        np.testing.assert_array_equal(getattr(part, column), getattr(buffer, column)[-10:])
    part.obs[0] = 99.0
    assert not (buffer.obs == 99.0).any()
    assert len(buffer.last(1000)) == len(buffer)
    with pytest.raises(ValueError, match="positive"):
        buffer.last(0)


def test_loading_a_missing_file_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no replay buffer"):
        ReplayBuffer.load(tmp_path / "missing.npz")


@settings(max_examples=25, deadline=None)
@given(num_episodes=st.integers(2, 12), fraction=st.floats(0.05, 0.9), seed=st.integers(0, 99))
def test_split_never_cuts_an_episode(num_episodes, fraction, seed):
    buffer = filled(num_episodes=num_episodes, length=3)
    train, val = buffer.split(fraction, np.random.default_rng(seed), segment_length=None)
    assert len(train) + len(val) == len(buffer)
    assert not set(buffer.episode[train]) & set(buffer.episode[val])
    assert len(train) > 0


def test_long_episodes_are_split_in_whole_segments():
    buffer = filled(num_episodes=2, length=50)  # episode 0: rows 0-49, episode 1: 50-99
    train, val = buffer.split(0.5, np.random.default_rng(0), segment_length=10)
    assert len(val) == 50 and len(train) == 50
    segments = {(int(buffer.episode[i]), i % 50 // 10) for i in val}
    assert len(segments) == 5  # five whole segments of ten rows
    assert sorted(val) == sorted(
        i for i in range(100) if (int(buffer.episode[i]), i % 50 // 10) in segments
    )
    assert set(buffer.episode[val]) == {0, 1}  # both episodes contribute (with this seed)


def test_minibatches_cover_every_index_once():
    buffer = filled()
    indices = np.arange(len(buffer))
    chunks = list(buffer.minibatches(indices, 10, np.random.default_rng(0)))
    assert [len(c) for c in chunks] == [10, 10, 10, 10, 2]
    np.testing.assert_array_equal(np.sort(np.concatenate(chunks)), indices)


def test_journal_rebuilds_the_buffer_and_ignores_a_torn_record(tmp_path):
    path = tmp_path / "transitions.bin"
    buffer = ReplayBuffer(3, 2)
    buffer.attach_journal(path)
    source = filled()
    buffer.extend(source)
    with open(path, "ab") as f:  # a record cut short by a kill
        f.write(b"\x01\x02\x03")
    rebuilt = ReplayBuffer.from_journal(path, 3, 2)
    assert len(rebuilt) == len(source)
    np.testing.assert_array_equal(rebuilt.next_obs, source.next_obs)
    np.testing.assert_array_equal(rebuilt.episode, source.episode)
    rebuilt.attach_journal(path)
    rebuilt.add(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), False, True, 99)
    assert len(ReplayBuffer.from_journal(path, 3, 2)) == len(source) + 1
