"""Tables, the HTML report and the docs section."""

from __future__ import annotations

from pathlib import Path

from apos.sim.report import format_duration, format_table, render_report
from apos.sim.runner import run_scenario
from apos.sim.scenario import Scenario, load_scenario
from apos.sim.suite import MARK_END, MARK_START, run_suite, write_benchmarks_md

ROUTERS = ("random", "round_robin", "fixed_best", "sliding_window_sr", "oracle")


def test_format_table_lists_routers_and_outages(tiny: Scenario) -> None:
    text = format_table(run_scenario(tiny, ROUTERS, seed=1))
    for name in ROUTERS:
        assert f"| {name} |" in text
    assert "| sliding_window_sr | a outage |" in text
    assert "time to leave" in text


def test_render_report_writes_self_contained_html(tmp_path: Path) -> None:
    result = run_scenario(load_scenario("realistic_day"), ROUTERS, seed=1, payments=20_000)
    path = render_report(result, tmp_path)
    html = path.read_text()
    assert path.name == "realistic_day-seed1.html"
    assert html.count("<svg") == 2 + len(ROUTERS)  # success, truth, one share plot each
    assert "adyen outage" in html and "card testing at m_games" in html
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org", "")


def test_format_duration() -> None:
    assert [format_duration(x) for x in (None, 5, 161, 3725)] == ["—", "5s", "2m 41s", "1h 02m"]


def test_suite_table_and_docs_markers(tmp_path: Path) -> None:
    suite = run_suite(["stable"], payments=5000, seeds=(1,), routers=ROUTERS)
    table = format_table(suite)
    assert table.splitlines()[0].startswith("| scenario | random |")
    assert "| stable |" in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n<!-- other:start -->\nkeep me\n<!-- other:end -->\n")
    write_benchmarks_md("first", doc)
    write_benchmarks_md(table, doc)
    text = doc.read_text()
    assert "keep me" in text and "intro" in text
    assert text.count(MARK_START) == 1 and text.count(MARK_END) == 1
    assert "first" not in text and "| stable |" in text
    fresh = write_benchmarks_md("hello", tmp_path / "new" / "benchmarks.md")
    assert fresh.read_text() == f"# Benchmarks\n\n{MARK_START}\nhello\n{MARK_END}\n"
