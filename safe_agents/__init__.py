"""safe-agents."""
