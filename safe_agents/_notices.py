"""Silence a third-party notice that concerns no environment of this package.

gymnasium-robotics 1.2.2, imported by gymnasium's plugin loader at every ``import gymnasium``,
prints (twice) a notice about the reward functions of its Adroit hand environments, through the
``farama_notifications`` registry. This package never makes an Adroit environment, so the notice
only buries the package's own output. It is dropped from the registry before gymnasium is first
imported; nothing else is changed, and a user who imported gymnasium earlier still sees it.
"""

from __future__ import annotations


def silence_adroit_notice() -> None:
    """Remove gymnasium-robotics' entry from ``farama_notifications`` (idempotent)."""
    try:
        from farama_notifications import notifications
    except ImportError:  # an install without it prints nothing either
        return
    notifications.pop("gymnasium_robotics", None)


silence_adroit_notice()
