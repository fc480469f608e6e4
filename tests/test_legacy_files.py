"""Agents saved by earlier versions load, act as they did and resume training.

The files in ``tests/data/legacy_agents`` were saved by the code before the batched ensembles
(each ``QEnsemble`` member a separate network, its optimizer state listed member by member);
``make.py`` there says how.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from safe_agents import load_agent
from safe_agents.common import serialization
from safe_agents.common.callbacks import StopAfterSteps
from safe_agents.common.critics import QEnsemble, stack_member_optimizer_state

LEGACY = Path(__file__).parent / "data" / "legacy_agents"
RECORD = json.loads((LEGACY / "actions.json").read_text())


@pytest.mark.parametrize("name", sorted(RECORD["actions"]))
def test_legacy_agent_acts_as_saved_and_resumes(name: str) -> None:
    agent = load_agent(LEGACY / f"{name}.zip")
    observations = np.asarray(RECORD["observations"], dtype=np.float32)
    actions = agent.predict(observations, deterministic=True)[0]
    # The same networks; batched products round differently from per-member ones.
    np.testing.assert_allclose(actions, RECORD["actions"][name], atol=1e-5)
    data = envs.load_dataset("OfflineToyReachAvoid-v0")
    steps = agent.num_steps
    agent.learn_offline(data, callback=StopAfterSteps(steps + 1))
    assert agent.num_steps == steps + 1
    assert all(torch.isfinite(p).all() for p in agent.parameters_dict().values())


def test_legacy_optimizer_moments_are_stacked_by_member() -> None:
    """FISOR's critic optimizer listed Q_h's member 0 (6 tensors), member 1 (6), V_h, then
    Q_r's members and V_r; each stacked tensor's row i is member i's old moment."""
    saved = serialization.read_agent_file(LEGACY / "fisor.zip").training["optimizers"]["critic"]
    assert len(saved["param_groups"][0]["params"]) == 36  # the per-member layout
    agent = load_agent(LEGACY / "fisor.zip")
    state = agent.optimizers["critic"].state
    for member in range(2):
        for k in range(3):
            for kind, offset in (("weight", 0), ("bias", 1)):
                old = saved["state"][member * 6 + 2 * k + offset]
                new = state[getattr(agent.feasibility_q, f"{kind}_{k}")]
                torch.testing.assert_close(new["exp_avg"][member], old["exp_avg"])
                torch.testing.assert_close(new["exp_avg_sq"][member], old["exp_avg_sq"])
                torch.testing.assert_close(new["step"], old["step"])
    # Q_r's members come after Q_h's 12 tensors and V_h's 6.
    old = saved["state"][18 + 6 + 2]  # Q_r member 1, layer 1 weight
    torch.testing.assert_close(state[agent.reward_q.weight_1]["exp_avg"][1], old["exp_avg"])


def test_conversion_leaves_todays_layout_and_unknown_states_alone() -> None:
    ensemble = QEnsemble(3, 2, n=2, hidden_sizes=(4,))
    head = torch.nn.Linear(3, 1)
    optimizer = torch.optim.Adam([*ensemble.parameters(), *head.parameters()])
    loss = ensemble(torch.ones(5, 3), torch.ones(5, 2)).sum() + head(torch.ones(5, 3)).sum()
    loss.backward()
    optimizer.step()
    today = optimizer.state_dict()
    assert stack_member_optimizer_state(today, optimizer, [ensemble]) is today
    # A list that matches neither layout is returned unchanged for load_state_dict to refuse.
    odd = {**today, "param_groups": [{**today["param_groups"][0], "params": [0, 1, 2]}]}
    assert stack_member_optimizer_state(odd, optimizer, [ensemble]) is odd
