"""dynaplan: model-based reinforcement learning with learned dynamics and MPC."""

__version__ = "0.1.0"
