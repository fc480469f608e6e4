#!/usr/bin/env bash
# Installs safe-agents and the whole simulator stack into a virtual environment (.venv by default).
#
# Two pip steps, because pip has no override mechanism and two pins cannot be satisfied on
# Python 3.11: safety-gymnasium 1.0.0 pins pygame==2.1.0 (no 3.11 wheel) and dsrl 0.1.0 pins
# safety-gymnasium==0.4.0. Step 1 installs the package with every real dependency (pyproject.toml);
# step 2 adds those two without their declared dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${SAFE_AGENTS_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" 
"$VENV/bin/python" -m pip install --quiet -e ".[test]"
"$VENV/bin/python" -m pip install --quiet --no-deps "safety-gymnasium==1.0.0" "dsrl==0.1.0"
echo "safe-agents installed in $VENV"
