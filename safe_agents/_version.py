"""The package version, in one place: ``safe_agents.__version__``, the wheel's metadata
(``pyproject.toml`` reads it) and every saved agent's ``metadata.json``."""

__version__ = "0.1.0"
