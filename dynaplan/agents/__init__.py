"""Agents: everything that turns an observation into an action."""

from dynaplan.agents.mpc import MPCAgent

__all__ = ["MPCAgent"]
