"""Writes the saved agents of this folder: tiny agents saved by the code before the batched
ensembles (per-member ``QEnsemble`` layout, 69cc25d), and their deterministic actions.

They were made once, from a checkout of that revision, and are kept as they are:

    git worktree add --detach /tmp/before 69cc25d
    PYTHONPATH=/tmp/before python tests/data/legacy_agents/make.py tests/data/legacy_agents

``tests/test_legacy_files.py`` checks that today's code loads them, acts as they did and
resumes their training.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

import envs
from safe_agents import get_agent_class
from safe_agents.common.callbacks import StopAfterSteps

# Small networks (the files stay small); a few steps so the optimizers hold moments.
SMALL = {
    "fisor": {
        "n_steps": 4,
        "batch_size": 32,
        "actor_batch_size": 32,
        "actor_width": 16,
        "actor_expansion": 1,
        "critic_hidden_sizes": (16, 16),
        "time_embedding_dim": 8,
        "n_candidates": 4,
    },
    "spi": {
        "n_steps": 4,
        "batch_size": 32,
        "actor_width": 16,
        "actor_blocks": 1,
        "critic_hidden_sizes": (16, 16),
        "n_candidates": 4,
    },
    "drcorl": {
        "n_steps": 6,
        "pretrain_steps": 3,
        "batch_size": 32,
        "actor_hidden_sizes": (16, 16),
        "critic_hidden_sizes": (16, 16),
        "behaviour_width": 16,
        "behaviour_blocks": 1,
        "diffusion_steps": 5,
        "temperature_epoch_steps": 2,
    },
    "bcq_lag": {
        "n_steps": 4,
        "batch_size": 32,
        "actor_hidden_sizes": (16, 16),
        "critic_hidden_sizes": (16, 16),
        "vae_hidden_sizes": (16, 16),
    },
    "cpq": {
        "n_steps": 4,
        "batch_size": 32,
        "actor_hidden_sizes": (16, 16),
        "critic_hidden_sizes": (16, 16),
        "vae_hidden_sizes": (16, 16),
    },
}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    task = "OfflineToyReachAvoid-v0"
    env, data = envs.make(task), envs.load_dataset(task)
    rng = np.random.default_rng(0)
    obs = data.observations[rng.choice(len(data.observations), 5, replace=False)]
    record: dict[str, object] = {"observations": obs.tolist(), "actions": {}}
    for name, settings in SMALL.items():
        agent = get_agent_class(name)(env, seed=0, preset="cpu", **settings)
        # Stopped one step short of n_steps: the file is a run to resume.
        agent.learn_offline(data, callback=StopAfterSteps(settings["n_steps"] - 1))
        agent.save(out / name)
        actions = agent.predict(obs, deterministic=True)[0]
        record["actions"][name] = actions.tolist()  # type: ignore[index]
    (out / "actions.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
