"""Per-environment differentiable rewards and exact terminations, and their registry.

>>> from dynaplan import tasks
>>> task = tasks.get("Hopper-v5")
>>> tasks.register("MyEnv-v0", tasks.Task.from_functions(my_reward, my_terminated))
"""

from dynaplan.tasks import mujoco as _mujoco  # noqa: F401  (registers the built-in tasks)
from dynaplan.tasks import toy as _toy  # noqa: F401
from dynaplan.tasks.base import Task
from dynaplan.tasks.registry import get, register, registered

__all__ = ["Task", "get", "register", "registered"]
