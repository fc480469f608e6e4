#!/usr/bin/env bash
# Installs safe-agents with every simulator, Ray, tensorboard, wandb, the test and docs tools into
# a virtual environment (.venv by default), at the exact versions the tests run on.
#
# pyproject.toml declares ranges and one extra per simulator (a core install, `pip install
# safe-agents`, has the agents, datasets, wrappers and the toy task); scripts/constraints.txt
# pins the combination tested here. Two packages come in a second step, without their declared
# dependencies, because two of their pins cannot be satisfied on Python 3.11: safety-gymnasium
# 1.0.0 pins pygame==2.1.0 (no 3.11 wheel) and dsrl 0.1.0 pins safety-gymnasium==0.4.0. Every
# dependency they need at run time is in the extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${SAFE_AGENTS_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$VENV/bin/python" -m pip install --quiet -c scripts/constraints.txt -e ".[all,dev]"
"$VENV/bin/python" -m pip install --quiet --no-deps "safety-gymnasium==1.0.0" "dsrl==0.1.0"
echo "safe-agents installed in $VENV"
