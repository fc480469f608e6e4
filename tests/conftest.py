"""Shared fixtures: the shipped toy dataset and small real environments."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings

import pytest

import envs

# No test reaches outside this machine: DSRL downloads go to a closed loopback port unless a
# test serves files itself, and dsrl's own cache is an empty folder (not the user's).
os.environ["SAFE_AGENTS_DSRL_URL"] = "http://127.0.0.1:9/dsrl"
os.environ["DSRL_DATASET_DIR"] = tempfile.mkdtemp(prefix="safe-agents-test-dsrl-")
atexit.register(shutil.rmtree, os.environ["DSRL_DATASET_DIR"], ignore_errors=True)

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
