"""The agent registry: the single source of algorithm names for the CLI, benchmarks and tests.

Agent classes register themselves when defined (``BaseAgent.__init_subclass__``). Python imports
the ``safe_agents`` package, which imports every algorithm module, before any of its modules
(this one included), so :func:`list_agents` is complete whenever a caller can reach it.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from safe_agents.common.base import BaseAgent

_AGENTS: dict[str, type[BaseAgent]] = {}


def register_agent(agent_class: type[BaseAgent]) -> None:
    name = agent_class.name
    if name in _AGENTS and _AGENTS[name] is not agent_class:
        raise ValueError(f"two agent classes are named {name!r}")
    _AGENTS[name] = agent_class


def list_agents() -> list[str]:
    """Registered algorithm names, sorted (``bc_all``, ``bc_safe``, ...)."""
    return sorted(_AGENTS)


def get_agent_class(name: str) -> type[BaseAgent]:
    """The class registered as ``name`` (``-`` and ``_`` are interchangeable).

    Raises:
        ValueError: unknown name, listing the registered ones.
    """
    key = name.lower().replace("-", "_")
    if key not in _AGENTS:
        close = difflib.get_close_matches(key, _AGENTS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown agent {name!r}.{hint} Registered: {', '.join(sorted(_AGENTS))}")
    return _AGENTS[key]


def make_agent(name: str, env: Any = None, **kwargs: Any) -> BaseAgent:
    """Construct the agent registered as ``name`` (keyword arguments as its constructor's)."""
    return get_agent_class(name)(env, **kwargs)
