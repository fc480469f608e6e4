"""Fingerprint every agent's seeded training, to show a refactoring changed no number.

``record DIR`` trains each registered agent for a few hundred steps on the shipped toy task
(seed 0, its ``cpu`` preset, stage lengths shortened), then writes ``DIR/fingerprint.json`` (the
logged losses, a SHA-256 of every parameter, the deterministic and the seeded stochastic actions
on fixed observations) and ``DIR/<agent>.zip``. ``compare DIR`` repeats the training with the
code now installed and checks that every number is bit-identical, and that each saved agent
loads and acts exactly as it did. Run ``record`` on the old revision (a ``git worktree``) and
``compare`` on the new one::

    git worktree add ../before <old-revision>
    PYTHONPATH=../before python scripts/fingerprint.py record /tmp/fingerprint
    python scripts/fingerprint.py compare /tmp/fingerprint

Exit status 1 names every agent and quantity that differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs
import safe_agents

TOY = "OfflineToyReachAvoid-v0"
STEPS = 200
#: Stage lengths short enough that every stage of the multi-stage agents runs within STEPS.
STAGES: dict[str, dict[str, Any]] = {
    "drcorl": {"pretrain_steps": 100, "temperature_epoch_steps": 20},
    "dspo": {"discriminator_steps": 60, "diffusion_train_steps": 80, "n_generated_segments": 64},
}


def fingerprint(name: str, out: Path | None) -> dict[str, Any]:
    """Train agent ``name`` as described in the module docstring and return its numbers."""
    env = envs.make(TOY)
    data = envs.load_dataset(TOY)
    agent = safe_agents.make_agent(name, env, seed=0, preset="cpu", **STAGES.get(name, {}))
    kwargs: dict[str, Any] = {"n_steps": STEPS, "log_interval": 50}
    if agent.needs_demos:
        data, kwargs["demos"] = data.strip_costs(n_safe_demos=10)
    agent.learn_offline(data, **kwargs)
    obs = np.random.default_rng(123).uniform(-1.0, 1.0, size=(32, *env.observation_space.shape))
    deterministic = agent.predict(obs.astype(np.float32), deterministic=True)[0]
    stochastic = agent.predict(obs.astype(np.float32), deterministic=False)[0]
    if out is not None:
        agent.save(out / f"{name}.zip")
    history = [
        {k: v for k, v in row.items() if not k.startswith("time/")} for row in agent.logger.history
    ]
    parameters = {
        key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for key, value in agent.parameters_dict().items()
    }
    return {
        "history": history,
        "parameters": parameters,
        "deterministic": deterministic.tolist(),
        "stochastic": stochastic.tolist(),
        "observations": obs.tolist(),
    }


def _differences(name: str, old: dict[str, Any], new: dict[str, Any], out: Path) -> list[str]:
    problems = [
        f"{name}: {key} differs"
        for key in ("history", "deterministic", "stochastic")
        if old[key] != new[key]
    ]
    if old["parameters"].keys() != new["parameters"].keys():
        problems.append(f"{name}: parameter names differ")
    else:
        problems += [
            f"{name}: parameter {key} differs"
            for key in old["parameters"]
            if old["parameters"][key] != new["parameters"][key]
        ]
    loaded = safe_agents.load_agent(out / f"{name}.zip")
    obs = np.asarray(old["observations"], dtype=np.float32)
    if loaded.predict(obs, deterministic=True)[0].tolist() != old["deterministic"]:
        problems.append(f"{name}: the agent saved by the old code acts differently when loaded")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "compare"))
    parser.add_argument("directory", type=Path)
    parser.add_argument("--agents", nargs="*", default=None, help="default: every agent")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = args.agents or safe_agents.list_agents()
    if args.mode == "record":
        args.directory.mkdir(parents=True, exist_ok=True)
        record = {name: fingerprint(name, args.directory) for name in names}
        (args.directory / "fingerprint.json").write_text(json.dumps(record))
        print(f"recorded {len(record)} agents in {args.directory}")
        return 0
    recorded = json.loads((args.directory / "fingerprint.json").read_text())
    problems: list[str] = []
    for name in names:
        found = _differences(name, recorded[name], fingerprint(name, None), args.directory)
        print(f"{name}: " + ("identical" if not found else "; ".join(found)), flush=True)
        problems += found
    print("every number identical" if not problems else f"{len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
