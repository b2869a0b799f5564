"""Actor-critic networks on a ladder of rungs (see ``capgap.agents.nets``)."""

from .nets import FAMILIES, LADDER, ActorCritic, Rung, build, ladder_table, rung

__all__ = ["FAMILIES", "LADDER", "ActorCritic", "Rung", "build", "ladder_table", "rung"]
