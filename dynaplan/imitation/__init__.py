"""Imitation of the MPC controller: behaviour cloning, DAgger, warm-starting SB3 PPO.

``dynaplan.imitation.clone`` makes a clone folder from a run; ``dynaplan.imitation.policy``
holds the SB3-side pieces (the clone's network, the regression, the warm start).
"""
