"""Shared fixtures: the shipped toy dataset and small real environments."""

from __future__ import annotations

import warnings

import pytest

import envs

TOY = "OfflineToyReachAvoid-v0"


@pytest.fixture(autouse=True)
def _quiet_env_checker():
    # check_env warns that our environments are wrapped (they are, by design: CostAdapter).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is different from the unwrapped version.*")
        warnings.filterwarnings("ignore", message=".*Box observation space m.*infinity.*")
        yield


@pytest.fixture(scope="session")
def toy_dataset() -> envs.OfflineDataset:
    return envs.load_dataset(TOY)
