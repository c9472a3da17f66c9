"""dynaplan: model-based reinforcement learning with learned dynamics and MPC."""

from dynaplan.loop import RunResult, resume, train

__version__ = "0.1.0"
__all__ = ["RunResult", "__version__", "resume", "train"]
