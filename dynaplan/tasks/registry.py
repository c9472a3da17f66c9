"""Which task belongs to which Gymnasium env id."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym

from dynaplan.errors import ConfigError
from dynaplan.tasks.base import Task

TaskFactory = Callable[[gym.Env], Task]
"""Builds a task from the *unwrapped* env, reading its constants (healthy ranges, weights)."""

_REGISTRY: dict[str, Task | TaskFactory] = {}


def register(env_id: str, task: Task | TaskFactory, *, overwrite: bool = False) -> None:
    """Register a task (or a factory ``env -> Task``) for a Gymnasium env id."""
    is_factory = callable(task) and (not isinstance(task, type) or issubclass(task, Task))
    if not isinstance(task, Task) and not is_factory:
        raise ConfigError(
            f"tasks.register({env_id!r}, ...) takes a dynaplan Task (e.g. "
            "Task.from_functions(reward_fn, terminated_fn)), a Task subclass or a function "
            f"env -> Task; got {type(task).__name__} {task!r:.60}"
        )
    if env_id in _REGISTRY and not overwrite:
        raise ConfigError(
            f"a task is already registered for {env_id!r}; pass overwrite=True to replace it"
        )
    _REGISTRY[env_id] = task


def registered() -> list[str]:
    """The env ids that have a task, sorted."""
    return sorted(_REGISTRY)


def get(env_id: str, env: gym.Env | None = None) -> Task:
    """The task for ``env_id``; a factory is given ``env`` (made here when None)."""
    if env_id not in _REGISTRY:
        known = ", ".join(registered())
        raise ConfigError(
            f"no task is registered for env id {env_id!r}. Known: {known}. "
            "Register your own with dynaplan.tasks.register(env_id, "
            "Task.from_functions(reward_fn, terminated_fn))"
        )
    entry = _REGISTRY[env_id]
    if isinstance(entry, Task):
        return entry
    if env is None:
        env = gym.make(env_id)
        try:
            return entry(env.unwrapped)
        finally:
            env.close()
    return entry(env.unwrapped)
