"""safe-agents: safe offline reinforcement learning with diffusion models.

>>> from safe_agents import BCSafe
>>> agent = BCSafe(env, seed=0).learn_offline("OfflineToyReachAvoid-v0", n_steps=2000)
>>> action, _ = agent.predict(obs, deterministic=True)
"""

from safe_agents._version import __version__  # noqa: I001

# First, before anything imports gymnasium: drop a third-party notice about Adroit environments.
from safe_agents import _notices  # noqa: E402, F401, I001
from safe_agents.baselines import CDT, CPQ, BCAll, BCQLag, BCSafe, COptiDICE  # noqa: E402  (registers the agents)
from safe_agents.common import (  # noqa: E402
    AgentLoadError,
    BaseAgent,
    BaseCallback,
    CheckpointCallback,
    EvalCallback,
    StopAfterSteps,
    get_agent_class,
    list_agents,
    make_agent,
)
from safe_agents.drcorl import DRCORL  # noqa: E402
from safe_agents.dspo import DSPO  # noqa: E402
from safe_agents.fisor import FISOR  # noqa: E402
from safe_agents.spi import SPI  # noqa: E402


def load_agent(path, device: str = "auto", torch_threads: int | None = None) -> BaseAgent:
    """Load a saved agent of any algorithm (the file says which)."""
    return BaseAgent.load(path, device=device, torch_threads=torch_threads)


__all__ = [
    "AgentLoadError",
    "BCAll",
    "BCQLag",
    "CPQ",
    "BCSafe",
    "CDT",
    "COptiDICE",
    "DRCORL",
    "DSPO",
    "FISOR",
    "SPI",
    "BaseAgent",
    "BaseCallback",
    "CheckpointCallback",
    "EvalCallback",
    "StopAfterSteps",
    "__version__",
    "get_agent_class",
    "list_agents",
    "load_agent",
    "make_agent",
]
