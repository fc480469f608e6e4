"""The scripts in examples/ run end to end in their tiny mode and print what they computed.

Each script runs as a user would run it (a subprocess, ``--tiny --out DIR``); the test checks its
exit status, the files it promises, and that the table it prints holds the numbers it saved in
``results.json`` (or, for the sweep, in its result rows), consistent with the cost limits.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TOY_COST_LIMIT = 5.0
TIMEOUT_SECONDS = 300  # each takes 5-20 s alone; generous for two busy cores


def run_example(script: str, out: Path) -> str:
    """Run ``examples/<script> --tiny --out out`` from ``out``; return its standard output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--tiny", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        cwd=out,  # nothing may land in the repository
        env=env,
    )
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def table_line(stdout: str, label: str, numbers: list[str]) -> list[str]:
    """The fields after ``label`` on the printed line that starts with it and shows ``numbers``
    side by side."""
    for line in stdout.splitlines():
        fields = line[len(label) :].split() if line.startswith(label + " ") else []
        if any(fields[i : i + len(numbers)] == numbers for i in range(len(fields))):
            return fields
    raise AssertionError(f"no line labelled {label!r} shows {numbers}:\n{stdout}")


def check_row(stdout: str, label: str, row: dict, cost_limit: float) -> list[str]:
    """The printed row shows the saved figures, and its normalized cost is cost / limit."""
    numbers = [f"{row[key]:.2f}" for key in ("return", "cost")] + [
        f"{row[key]:.3f}" for key in ("normalized_return", "normalized_cost")
    ]
    fields = table_line(stdout, label, numbers)
    assert all(math.isfinite(row[key]) for key in ("return", "cost", "normalized_return"))
    assert row["normalized_cost"] == pytest.approx(row["cost"] / cost_limit)
    return fields


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def check_custom_env(stdout: str, out: Path) -> None:
    saved = results(out)
    names = [row["policy"] for row in saved["rows"]]
    assert names == [
        "scripted cautious",
        "scripted reckless",
        "BC-Safe",
        "FISOR",
        "scripted reckless + SafetyFilter",
    ]
    for row in saved["rows"]:
        check_row(stdout, row["policy"], row, saved["cost_limit"])
    # The scripted cautious controller never exceeds the speed limit; the reckless one does.
    assert saved["rows"][0]["cost"] == 0.0 < saved["rows"][1]["cost"]
    assert 0 <= saved["shield_interventions"] <= saved["shield_steps"]
    assert "same actions: True" in stdout  # the reloaded agent acts like the saved one
    # NormalizedMetrics' figures of an episode equal envs.evaluate's for the same episode.
    match = re.search(
        r"normalized return (\S+), normalized cost (\S+) \(evaluate: (\S+), (\S+)\)", stdout
    )
    assert match, stdout
    wrapper, evaluated = match.group(1, 2), match.group(3, 4)
    assert wrapper == evaluated


def check_shield(stdout: str, out: Path) -> None:
    saved = results(out)
    assert [row["policy"] for row in saved["rows"]] == [
        "PPO (reward only)",
        "PPO + shield (FISOR candidates)",
        "PPO + shield (perturbations)",
        "FISOR (offline)",
    ]
    for row in saved["rows"]:
        fields = check_row(stdout, row["policy"], row, TOY_COST_LIMIT)
        assert fields[-1] == row["replaced"]
        if row["replaced"] != "-":
            replaced, steps = map(int, row["replaced"].split("/"))
            assert 0 <= replaced <= steps


def check_dspo(stdout: str, out: Path) -> None:
    saved = results(out)
    assert [row["agent"] for row in saved["rows"]][0] == "DSPO"
    for row in saved["rows"]:
        check_row(stdout, row["agent"], row, TOY_COST_LIMIT)
    assert saved["n_safe_demos"] == 10
    assert 0.0 <= saved["discriminator"]["accuracy"] <= 1.0
    assert f"accuracy {saved['discriminator']['accuracy']:.3f}" in stdout


def check_cdt(stdout: str, out: Path) -> None:
    saved = results(out)
    # The loop written out by hand and envs.evaluate play the same episode.
    assert saved["by_hand_matches_evaluate"] and "(same: True)" in stdout
    assert [row["target_cost"] for row in saved["rows"]] == [0.0, 5.0, 15.0, 30.0]
    for row in saved["rows"]:
        fields = check_row(stdout, f"{row['target_cost']:>11.1f}", row, TOY_COST_LIMIT)
        assert fields[0] == f"{row['target_return']:.2f}"


def check_ray_sweep(stdout: str, out: Path) -> None:
    rows = [json.loads(path.read_text()) for path in sorted((out / "rows").glob("*.json"))]
    assert [row["agent"] for row in rows] == ["bc_all", "bc_safe"]
    for row in rows:
        assert (out / "agents" / f"{row['agent']}__{row['task']}__seed0.zip").is_file()
        assert row["n_steps"] == 30 and len(row["episodes"]["return"]) == 2
        cell = f"{row['mean_normalized_return']:.2f} +- 0.00 / {row['mean_normalized_cost']:.2f}"
        assert cell in stdout
        assert row["mean_normalized_cost"] == pytest.approx(row["mean_cost"] / TOY_COST_LIMIT)
    assert f"report table: {out / 'report.md'}" in stdout
    assert (out / "report.md").is_file() and (out / "report.csv").is_file()


RAY_MISSING = importlib.util.find_spec("ray") is None

CASES = [
    pytest.param(
        "custom_env.py",
        ["cart_reach.hdf5", "bc_safe.zip", "fisor.zip", "results.json"],
        check_custom_env,
        id="custom_env",
    ),
    pytest.param(
        "shield_sb3_ppo.py", ["ppo.zip", "fisor.zip", "results.json"], check_shield, id="shield"
    ),
    pytest.param(
        "dspo_without_cost_labels.py", ["dspo.zip", "results.json"], check_dspo, id="dspo"
    ),
    pytest.param("cdt_deployment.py", ["cdt.zip", "results.json"], check_cdt, id="cdt"),
    pytest.param(
        "ray_sweep.py",
        ["sweep.json", "report.md", "report.csv", "plots"],
        check_ray_sweep,
        id="ray_sweep",
        marks=pytest.mark.skipif(
            RAY_MISSING,
            reason='ray is not installed (pip install "safe-agents[ray]" runs this example)',
        ),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("script", "outputs", "check"), CASES)
def test_example_runs_in_tiny_mode(script, outputs, check, tmp_path):
    stdout = run_example(script, tmp_path)
    for name in outputs:
        assert (tmp_path / name).exists(), f"{script} did not write {name}:\n{stdout}"
    check(stdout, tmp_path)


def test_every_example_is_tested_and_listed():
    tested = {case.values[0] for case in CASES}
    assert {path.name for path in EXAMPLES.glob("*.py")} == tested
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"examples/{name}" in readme for name in tested)
