#!/usr/bin/env bash
# Checks the core install: `pip install .` without extras (no simulator, no Ray, no dsrl) into a
# fresh virtual environment, then imports the package, trains BC-Safe and FISOR on the toy task,
# saves and reloads them, and checks that a simulator task fails with an error naming what to
# install. CI runs it after the test suite; it needs the package index (about two minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$WORK/venv/bin/python" -m pip install --quiet .
cd "$WORK"  # away from the checkout, so the installed package is the one imported
"$WORK/venv/bin/python" - <<'PYTHON'
import importlib.util
import sys

import envs
from safe_agents import FISOR, BCSafe

absent = ["pybullet", "bullet_safety_gym", "safety_gymnasium", "metadrive", "mujoco", "ray", "dsrl"]
present = [name for name in absent if importlib.util.find_spec(name) is not None]
assert not present, f"a core install should not bring {present}"
assert envs.__file__.startswith(sys.prefix), f"imported {envs.__file__}, not the installed package"

env = envs.make("OfflineToyReachAvoid-v0")
data = envs.load_dataset("OfflineToyReachAvoid-v0")
for agent_class, options in ((BCSafe, {}), (FISOR, {"preset": "cpu"})):
    agent = agent_class(env, seed=0, **options).learn_offline(data, n_steps=50)
    report = envs.evaluate(agent, env, n_episodes=2, seed=0)
    path = agent.save("agent.zip")
    again = agent_class.load(path)
    obs = env.reset(seed=0)[0]
    assert (again.predict(obs, deterministic=True)[0] == agent.predict(obs, deterministic=True)[0]).all()
    print(f"{agent.name}: trained, evaluated (normalized cost {report['mean_normalized_cost']:.2f}), saved and reloaded")
try:
    envs.make("OfflineBallRun-v0")
except ImportError as error:
    assert "dsrl" in str(error), error
    print(f"a DSRL task without dsrl: {error}")
else:
    raise AssertionError("OfflineBallRun-v0 should need dsrl and Bullet-Safety-Gym")
PYTHON
# With dsrl's tables (installed without dependencies, as scripts/install.sh does), the DSRL tasks
# are registered and a task whose simulator is absent names the extra that installs it.
"$WORK/venv/bin/python" -m pip install --quiet --no-deps "dsrl==0.1.0"
"$WORK/venv/bin/python" - <<'PYTHON'
import envs

for task, extra in (
    ("OfflineBallRun-v0", "bullet"),
    ("OfflinePointGoal1Gymnasium-v0", "safety-gymnasium"),
    ("OfflineMetadrive-easysparse-v0", "metadrive"),
):
    try:
        envs.make(task)
    except envs.SimulatorNotInstalledError as error:
        assert f'pip install "safe-agents[{extra}]"' in str(error), error
        print(f"{task}: {error}")
    else:
        raise AssertionError(f"{task} should need the [{extra}] extra")
print("core install: OK")
PYTHON
