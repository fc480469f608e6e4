"""DRCORL on OfflineToyReachAvoid-v0: against FISOR, BC-Safe and BC-All; adaptation modes; the
cost-limit ablation; predict latency against FISOR.

3 training seeds x 10 evaluation episodes, evaluation seed 1000, as ``fisor_toy.py``. FISOR's
rows are read from ``results/fisor_toy.json`` (same dataset, seeds and evaluation episodes; run
``fisor_toy.py`` first); BC-All and BC-Safe are retrained here.

Pretraining (diffusion model, critics, behaviour-cloned warm start) does not depend on the cost
limit or the adaptation rule, so each seed is pretrained once and every variant extends a copy
of that checkpoint by the same number of extraction steps.

    python benchmarks/drcorl_toy.py --out benchmarks/results/drcorl_toy.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from bench_utils import (
    cpu_budget,
    latency_ms,
    mean_std_over_seeds,
    steps_per_second,
    summary,
    write_result,
)

import envs
from safe_agents import DRCORL, FISOR, BCAll, BCSafe
from safe_agents.common.callbacks import StopAfterSteps

TASK = "OfflineToyReachAvoid-v0"
# The cpu preset; gamma 0.95 because the toy's episodes are 100 steps long (see the DRCORL
# docstring: the episode-cost estimate needs 1 / (1 - gamma) well under the length).
DRCORL_STEPS, REDUCED_DRCORL = cpu_budget("drcorl")
PRETRAIN_STEPS = REDUCED_DRCORL.pop("pretrain_steps")
EXTRACTION_STEPS = DRCORL_STEPS - PRETRAIN_STEPS
REDUCED_DRCORL["gamma"] = 0.95
BC_STEPS, _ = cpu_budget("bc_all")
EVAL_SEED = 1000
TOY_LIMIT = 5.0
ABLATION_LIMITS = (2.5, 10.0, 20.0, 30.0)  # the paper's 10/20/30, and a tighter one
VARIANTS = {
    "drcorl_crpo": {"adaptation": "crpo"},
    "drcorl_lagrangian": {"adaptation": "lagrangian"},
}


def extend(checkpoint: Path, data, **changes) -> DRCORL:
    """The pretrained agent with changed extraction settings, trained to the end."""
    agent = DRCORL.load(checkpoint)
    agent.config = dataclasses.replace(agent.config, **changes)  # re-validated
    if "cost_limit" in changes:
        agent.cost_limit.value.fill_(changes["cost_limit"])
    return agent.learn_offline(data, n_steps=PRETRAIN_STEPS + EXTRACTION_STEPS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--fisor-results", default="benchmarks/results/fisor_toy.json")
    parser.add_argument("--out", default="benchmarks/results/drcorl_toy.json")
    args = parser.parse_args()
    env = envs.make(TASK)
    data = envs.load_dataset(TASK)
    fisor_results = json.loads(Path(args.fisor_results).read_text())
    rows: dict[str, list] = {"drcorl": [], "bc_all": [], "bc_safe": []}
    rows.update({name: [] for name in VARIANTS})
    ablation: dict[str, list] = {f"limit_{limit:g}": [] for limit in (TOY_LIMIT, *ABLATION_LIMITS)}
    timings: dict[str, list] = {"pretrain_s": [], "extraction_s": []}
    drcorl_agents = []
    workdir = Path(tempfile.mkdtemp(prefix="drcorl_toy_"))
    for seed in range(args.seeds):
        start = time.perf_counter()
        pretrained = DRCORL(env, seed=seed, pretrain_steps=PRETRAIN_STEPS, **REDUCED_DRCORL)
        # Planned to the end, stopped after pretraining: the checkpoint every variant extends.
        pretrained.learn_offline(
            data, n_steps=DRCORL_STEPS, callback=StopAfterSteps(PRETRAIN_STEPS)
        )
        timings["pretrain_s"].append(round(time.perf_counter() - start, 1))
        checkpoint = pretrained.save(workdir / f"pretrained_{seed}.zip")

        start = time.perf_counter()
        agent = extend(checkpoint, data)
        timings["extraction_s"].append(round(time.perf_counter() - start, 1))
        drcorl_agents.append(agent)
        row = summary(envs.evaluate(agent, env, args.episodes, EVAL_SEED))
        rows["drcorl"].append(row)
        ablation[f"limit_{TOY_LIMIT:g}"].append(row)
        for name, changes in VARIANTS.items():
            variant = extend(checkpoint, data, **changes)
            rows[name].append(summary(envs.evaluate(variant, env, args.episodes, EVAL_SEED)))
        for limit in ABLATION_LIMITS:
            variant = extend(checkpoint, data, cost_limit=limit)
            report = envs.evaluate(variant, env, args.episodes, EVAL_SEED, cost_limit=limit)
            ablation[f"limit_{limit:g}"].append(summary(report))
        for agent_class in (BCAll, BCSafe):
            bc = agent_class(env, seed=seed).learn_offline(data, n_steps=BC_STEPS)
            rows[agent_class.name].append(summary(envs.evaluate(bc, env, args.episodes, EVAL_SEED)))
        print(f"seed {seed}:", {k: v[-1] for k, v in rows.items()}, flush=True)

    table = mean_std_over_seeds(rows)
    table["fisor (from fisor_toy.json)"] = fisor_results["mean_std_over_seeds"]["fisor"]
    fisor = FISOR(env, seed=0, **fisor_results["fisor_config"])
    speed = {
        "drcorl_predict_ms_1": latency_ms(drcorl_agents[0], 1),
        "drcorl_predict_ms_1000": latency_ms(drcorl_agents[0], 1000),
        "fisor_predict_ms_1": latency_ms(fisor, 1),
        "fisor_predict_ms_1000": latency_ms(fisor, 1000, repeats=5),
        "fisor_paper_default_predict_ms_1": latency_ms(FISOR(env, seed=0), 1),
        "fisor_paper_default_predict_ms_1000": latency_ms(FISOR(env, seed=0), 1000, repeats=3),
        "drcorl_steps_per_s_pretrain": steps_per_second(
            DRCORL, env, data, 200, 10**6 + 1, pretrain_steps=10**6, **REDUCED_DRCORL
        ),
        "drcorl_steps_per_s_extraction": steps_per_second(
            DRCORL, env, data, 200, pretrain_steps=0, **REDUCED_DRCORL
        ),
        "drcorl_paper_default_steps_per_s": steps_per_second(DRCORL, env, data, 20, 110_000),
    }
    for batch in ("1", "1000"):
        speed[f"fisor_over_drcorl_latency_{batch}"] = (
            speed[f"fisor_predict_ms_{batch}"] / speed[f"drcorl_predict_ms_{batch}"]
        )
        speed[f"fisor_paper_default_over_drcorl_latency_{batch}"] = (
            speed[f"fisor_paper_default_predict_ms_{batch}"] / speed[f"drcorl_predict_ms_{batch}"]
        )
    result = {
        "task": TASK,
        "seeds": args.seeds,
        "episodes": args.episodes,
        "drcorl_config": REDUCED_DRCORL,
        "pretrain_steps": PRETRAIN_STEPS,
        "extraction_steps": EXTRACTION_STEPS,
        "bc_steps": BC_STEPS,
        "timings": timings,
        "per_seed": rows,
        "mean_std_over_seeds": table,
        "cost_limit_ablation": mean_std_over_seeds(ablation),
        "cost_limit_ablation_per_seed": ablation,
        "speed": speed,
    }
    out = write_result(args.out, result)
    drcorl_agents[0].save(out.with_suffix(".drcorl_seed0.zip"))
    print(
        json.dumps(
            {
                "mean_std_over_seeds": table,
                "cost_limit_ablation": result["cost_limit_ablation"],
                "timings": timings,
                "speed": speed,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
