"""Shared pieces of every agent: the contract, networks, data, logging, callbacks, files."""

from safe_agents.common.base import BaseAgent
from safe_agents.common.callbacks import (
    BaseCallback,
    CallbackList,
    CheckpointCallback,
    EvalCallback,
    ProgressBarCallback,
    RemainingTimeCallback,
    StopAfterSteps,
)
from safe_agents.common.config import AgentConfig
from safe_agents.common.logger import Logger
from safe_agents.common.registry import get_agent_class, list_agents, make_agent
from safe_agents.common.serialization import AgentLoadError

__all__ = [
    "AgentConfig",
    "AgentLoadError",
    "BaseAgent",
    "BaseCallback",
    "CallbackList",
    "CheckpointCallback",
    "EvalCallback",
    "Logger",
    "ProgressBarCallback",
    "RemainingTimeCallback",
    "StopAfterSteps",
    "get_agent_class",
    "list_agents",
    "make_agent",
]
