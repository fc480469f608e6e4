"""The baselines the papers compare with."""

from safe_agents.baselines.bc import BCAll, BCConfig, BCSafe, BCSafeConfig

__all__ = ["BCAll", "BCConfig", "BCSafe", "BCSafeConfig"]
