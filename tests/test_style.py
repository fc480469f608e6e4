"""The house habits, enforced in the suite (and so in CI): ruff's lint and format, mypy, and the
import layers (import-linter's contract in ``pyproject.toml``).

The tools come with the ``[dev]`` extra, which ``scripts/install.sh`` installs; elsewhere the
tests are skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / tool
    if not executable.is_file():
        pytest.skip(f"{tool} is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing_to_fix():
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_ruff_formatted():
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_accepts_the_packages():
    result = _run("mypy", "envs", "safe_agents")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_layers_hold():
    # cli > bench > envs > algorithms > common: no module imports from a layer above its own,
    # and no algorithm imports another (pyproject.toml's [tool.importlinter]).
    result = _run("lint-imports")
    assert result.returncode == 0, result.stdout + result.stderr
