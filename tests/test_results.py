"""The raw results committed under ``results/`` re-render what docs/results.md shows: each
study's ``--report_only`` table from its runs' ``result.json`` and ``metrics.jsonl``, and
every table of the page's section is one of those re-rendered tables, cell for cell."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bregflax.evaluation import report

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results.md"


def _section(text: str, title: str) -> str:
    """From the ``## `` heading that starts with ``title`` to the next one."""
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def _render(table: str, tmp_path: Path) -> str:
    """``bregflax reproduce --table=TABLE --report_only`` on a copy of ``results/TABLE``."""
    shutil.copytree(ROOT / "results" / table, tmp_path / table)
    args = ["--table", table, "--scale=cpu", f"--workdir={tmp_path / table}", "--report_only"]
    done = subprocess.run(
        [sys.executable, "-m", "bregflax.paper.reproduce", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return (tmp_path / table / f"{table}.md").read_text()


def _every_run_is_its_result(text: str, table: str) -> None:
    every_run = {r["Run"]: r for r in report.read_markdown_tables(text)["Every run"]}
    results = sorted((ROOT / "results" / table).glob("cpu/*/result.json"))
    assert results and set(every_run) == {r.parent.name for r in results}
    for path in results:
        saved = json.loads(path.read_text())
        row = every_run[path.parent.name]
        if saved.get("diverged"):
            assert row["Accuracy"].startswith("diverged")
        else:
            accuracy = saved["scores"]["categorical"]["accuracy"]
            assert float(row["Accuracy"]) == pytest.approx(accuracy, abs=5e-5)


def _page_shows_only_rendered_tables(text: str, section: str, at_least: int) -> None:
    rendered = report.markdown_tables(text)
    copied = report.markdown_tables(_section(DOCS.read_text(), section))
    assert len(copied) >= at_least
    for header, rows in copied:
        assert (header, rows) in rendered, f"docs/results.md's table {header} is not rendered"


@pytest.mark.skipif(not (ROOT / "results" / "depth").is_dir(), reason="no committed results")
def test_the_depth_study_renders_from_its_committed_runs(tmp_path):
    text = _render("depth", tmp_path)
    _every_run_is_its_result(text, "depth")
    # every claim, the sweep, gradients, convergence, the unbounded map, the weighted loss,
    # Tables III and IV
    _page_shows_only_rendered_tables(text, "The depth story", at_least=8)


@pytest.mark.skipif(not (ROOT / "results" / "claims").is_dir(), reason="no committed results")
def test_the_claims_render_from_their_committed_runs(tmp_path):
    text = _render("claims", tmp_path)
    _every_run_is_its_result(text, "claims")
    _page_shows_only_rendered_tables(text, "Results", at_least=3)  # claims, arms, runs
