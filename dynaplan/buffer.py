"""Replay buffer of real transitions, with an episode-wise split and durable storage.

The buffer keeps growable numpy arrays. A run additionally mirrors every added
transition into an append-only journal file, so a killed run loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dynaplan.errors import CheckpointError
from dynaplan.types import TransitionBatch

_FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode")


class _Column:
    """Read-only view of the filled part of one storage array."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, buffer: ReplayBuffer, owner: type) -> np.ndarray:
        return buffer._data[self.name][: buffer._size]


class ReplayBuffer:
    """Transitions ``(obs, action, reward, next_obs, terminated, truncated, episode)``.

    Storage doubles when full. ``episode`` is an integer id per episode, so splits
    never cut an episode in two. Columns are numpy views: ``obs [N, S]``,
    ``action [N, A]``, ``reward [N]``, ``next_obs [N, S]``, ``terminated [N]``,
    ``truncated [N]``, ``episode [N]``.
    """

    obs = _Column()
    action = _Column()
    reward = _Column()
    next_obs = _Column()
    terminated = _Column()
    truncated = _Column()
    episode = _Column()

    def __init__(self, obs_dim: int, act_dim: int, capacity: int = 1024) -> None:
        if obs_dim <= 0 or act_dim <= 0:
            raise ValueError(f"obs_dim and act_dim must be positive, got {obs_dim}, {act_dim}")
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self._size = 0
        self._data = self._allocate(max(capacity, 1))
        self._journal: _Journal | None = None

    def _allocate(self, capacity: int) -> dict[str, np.ndarray]:
        return {
            "obs": np.zeros((capacity, self.obs_dim), np.float32),
            "action": np.zeros((capacity, self.act_dim), np.float32),
            "reward": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, self.obs_dim), np.float32),
            "terminated": np.zeros(capacity, bool),
            "truncated": np.zeros(capacity, bool),
            "episode": np.zeros(capacity, np.int64),
        }

    def __len__(self) -> int:
        return self._size

    @property
    def num_episodes(self) -> int:
        return len(np.unique(self.episode))

    def episode_starts(self) -> np.ndarray:
        """Indices ``[E]`` of each episode's first transition (its ``obs`` is a reset state)."""
        episode = self.episode
        return np.flatnonzero(np.r_[len(episode) > 0, episode[1:] != episode[:-1]])

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_obs: np.ndarray,
        terminated: bool,
        truncated: bool,
        episode: int,
    ) -> None:
        """Append one transition (and journal it when a journal is attached)."""
        if self._size == len(self._data["reward"]):
            grown = self._allocate(2 * self._size)
            for key, array in self._data.items():
                grown[key][: self._size] = array
            self._data = grown
        i = self._size
        self._data["obs"][i] = obs
        self._data["action"][i] = action
        self._data["reward"][i] = reward
        self._data["next_obs"][i] = next_obs
        self._data["terminated"][i] = terminated
        self._data["truncated"][i] = truncated
        self._data["episode"][i] = episode
        self._size += 1
        if self._journal is not None:
            self._journal.append({key: self._data[key][i] for key in _FIELDS})

    def extend(self, other: ReplayBuffer) -> None:
        for i in range(len(other)):
            self.add(*(getattr(other, key)[i] for key in _FIELDS))

    def last(self, count: int) -> ReplayBuffer:
        """A new buffer (no journal) holding copies of the most recent ``count`` transitions."""
        if count <= 0:
            raise ValueError(f"count must be positive, got {count}")
        count = min(count, self._size)
        part = ReplayBuffer(self.obs_dim, self.act_dim, capacity=count)
        for key in _FIELDS:
            part._data[key][:count] = getattr(self, key)[self._size - count :]
        part._size = count
        return part

    def mark_last_truncated(self) -> None:
        """End an episode that was cut off (e.g. by a kill) so splits stay clean."""
        if self._size and not (self.terminated[-1] or self.truncated[-1]):
            self._data["truncated"][self._size - 1] = True

    def split(
        self, val_fraction: float, rng: np.random.Generator, segment_length: int | None = 100
    ) -> tuple[np.ndarray, np.ndarray]:
        """Row indices ``(train, val)``: whole episodes, or whole segments of long ones.

        Episodes longer than ``segment_length`` are cut into consecutive segments of that
        length first, so one long episode (a good MPC run) cannot make up the whole
        validation set; ``None`` keeps episodes whole. With fewer than two units
        everything is training data and ``val`` is empty.
        """
        units = self._split_units(segment_length)
        unique = np.unique(units)
        n_val = round(val_fraction * len(unique))
        if len(unique) < 2 or n_val == 0:
            return np.arange(self._size), np.zeros(0, np.int64)
        n_val = min(n_val, len(unique) - 1)
        is_val = np.isin(units, rng.choice(unique, size=n_val, replace=False))
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def _split_units(self, segment_length: int | None) -> np.ndarray:
        """``[N]`` unit id per row: the episode, or (episode, position // segment_length)."""
        if segment_length is None:
            return self.episode
        order = np.argsort(self.episode, kind="stable")
        sorted_episodes = self.episode[order]
        starts = np.flatnonzero(np.r_[True, np.diff(sorted_episodes) != 0])
        lengths = np.diff(np.r_[starts, self._size])
        position = np.empty(self._size, np.int64)
        position[order] = np.arange(self._size) - np.repeat(starts, lengths)
        keys = np.stack([self.episode, position // segment_length], axis=1)
        return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> TransitionBatch:
        """The rows ``indices`` as a :class:`TransitionBatch` of tensors on ``device``."""
        return TransitionBatch(
            obs=torch.as_tensor(self.obs[indices], device=device),
            action=torch.as_tensor(self.action[indices], device=device),
            next_obs=torch.as_tensor(self.next_obs[indices], device=device),
            reward=torch.as_tensor(self.reward[indices], device=device),
            terminated=torch.as_tensor(self.terminated[indices], device=device),
        )

    def minibatches(
        self, indices: np.ndarray, batch_size: int, rng: np.random.Generator
    ) -> Iterator[np.ndarray]:
        """Shuffled chunks of ``indices``, each at most ``batch_size`` long."""
        order = rng.permutation(indices)
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the buffer to ``path`` (``.npz``) atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, obs_dim=self.obs_dim, act_dim=self.act_dim, **self._arrays())
        os.replace(tmp, path)

    def _arrays(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in _FIELDS}

    @classmethod
    def load(cls, path: str | Path) -> ReplayBuffer:
        """Read a buffer written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no replay buffer at {path}")
        with np.load(path, allow_pickle=False) as data:
            buffer = cls(int(data["obs_dim"]), int(data["act_dim"]), capacity=len(data["reward"]))
            for key in _FIELDS:
                buffer._data[key][: len(data[key])] = data[key]
            buffer._size = len(data["reward"])
        return buffer

    def attach_journal(self, path: str | Path) -> None:
        """Mirror every later :meth:`add` into the append-only file ``path``."""
        self._journal = _Journal(path, self.obs_dim, self.act_dim)

    @classmethod
    def from_journal(cls, path: str | Path, obs_dim: int, act_dim: int) -> ReplayBuffer:
        """Rebuild a buffer from a journal, ignoring a torn last record; the file is not changed.

        Call :meth:`attach_journal` on the result to go on appending to it.
        """
        if not Path(path).is_file():
            raise CheckpointError(f"no transition journal at {path}; the run collected no data")
        records = _Journal.read(path, obs_dim, act_dim)
        buffer = cls(obs_dim, act_dim, capacity=max(len(records), 1))
        for key in _FIELDS:
            buffer._data[key][: len(records)] = records[key]
        buffer._size = len(records)
        return buffer


def journal_prefix(path: str | Path, count: int, obs_dim: int, act_dim: int) -> bytes:
    """The first ``count`` records of the journal at ``path``, as a journal of their own (a
    branch of a run starts from them)."""
    size = count * _record_dtype(obs_dim, act_dim).itemsize
    with open(path, "rb") as f:
        prefix = f.read(size)
    if len(prefix) < size:
        raise CheckpointError(f"{path} holds fewer than {count} transitions")
    return prefix


class _Journal:
    """Fixed-size binary records appended with one ``write`` each and flushed to the OS."""

    def __init__(self, path: str | Path, obs_dim: int, act_dim: int) -> None:
        self.dtype = _record_dtype(obs_dim, act_dim)
        self.path = Path(path)
        size = self.path.stat().st_size if self.path.exists() else 0
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open for the run)
        self._file.truncate(size - size % self.dtype.itemsize)  # drop a torn record

    def append(self, row: dict[str, np.ndarray]) -> None:
        record = np.zeros(1, self.dtype)
        for key, value in row.items():
            record[key] = value
        self._file.write(record.tobytes())
        self._file.flush()

    @staticmethod
    def read(path: str | Path, obs_dim: int, act_dim: int) -> np.ndarray:
        dtype = _record_dtype(obs_dim, act_dim)
        raw = Path(path).read_bytes()
        whole = len(raw) - len(raw) % dtype.itemsize
        return np.frombuffer(raw[:whole], dtype=dtype)


def _record_dtype(obs_dim: int, act_dim: int) -> np.dtype:
    return np.dtype(
        [
            ("obs", np.float32, (obs_dim,)),
            ("action", np.float32, (act_dim,)),
            ("reward", np.float32),
            ("next_obs", np.float32, (obs_dim,)),
            ("terminated", bool),
            ("truncated", bool),
            ("episode", np.int64),
        ]
    )
