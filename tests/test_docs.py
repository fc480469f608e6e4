"""The documentation site builds in strict mode, with its results tables rendered from files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strict_with_generated_results_tables(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e .[docs]")
    pytest.importorskip("mkdocstrings", reason="the docs extra is not installed")
    site = tmp_path / "site"
    # mkdocs-material prints a notice about MkDocs 2 on every build; it is not a warning.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    fisor = (site / "algorithms" / "fisor" / "index.html").read_text()
    # The markers are gone, replaced by tables that name their source file.
    assert "<!-- results" not in fisor
    assert "benchmarks/results/fisor_toy/rows/*.json" in fisor
    assert "benchmarks/results/safety_filter.json" in fisor
    assert "bench_quick/rows/*.json" in fisor
    assert "normalized return / normalized cost" in fisor
    assert "<table>" in fisor
    # The hyperparameters come from the config dataclass.
    assert "FISORConfig" in fisor and "feasibility_expectile" in fisor

    baselines = (site / "algorithms" / "baselines" / "index.html").read_text()
    for agent in ("bcq_lag", "cpq", "coptidice", "cdt"):
        assert f"<th>{agent}</th>" in baselines

    # Each config set's folder, its variants in one table ("agent [variant]").
    for page, folder, variant in (
        ("drcorl", "drcorl_toy", "drcorl [crpo]"),
        ("spi", "spi_toy", "spi [without_safety_q]"),
        ("dspo", "dspo", "dspo [no_vclub]"),
    ):
        html = (site / "algorithms" / page / "index.html").read_text()
        assert f"benchmarks/results/{folder}/{{default," in html, page
        assert variant in html, page
        assert "data provenance" in html, page
    assert "benchmarks/results/dspo_discriminator.json" in html

    # The suite: its table generated from its rows, its progress, its failures and diagnoses.
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    assert "<!-- results" not in benchmarks
    assert "Generated from <code>benchmarks/results/suite</code> when the site is built" in (
        benchmarks
    )
    assert "Progress: " in benchmarks and "Failures and their diagnoses" in benchmarks

    # Figures under benchmarks/results are published with the site.
    assert (site / "assets" / "results" / "fisor_toy" / "feasibility.png").is_file()
    api = (site / "api" / "envs" / "index.html").read_text()
    assert "collect_episodes" in api and "reference_range" in api


def test_unknown_or_malformed_results_marker_fails_the_build() -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e .[docs]")
    import importlib.util
    from types import SimpleNamespace

    from mkdocs.exceptions import PluginError

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = SimpleNamespace(file=SimpleNamespace(src_uri="algorithms/x.md"))
    for marker in (
        "<!-- results: no_such_table -->",
        "<!-- results: safety_filter:no_such_part -->",
        "<!-- results: set:no_such_folder -->",
        "<!-- results safety_filter -->",
        "<!-- presets: no_such_agent -->",
    ):
        with pytest.raises(PluginError):
            hooks.on_page_markdown(f"# x\n\n{marker}\n", page, None, None)
