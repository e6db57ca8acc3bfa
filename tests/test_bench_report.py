"""bench/report.py rewrites only its own marked section of docs/benchmarks.md."""

from __future__ import annotations

import pytest

from bench.report import MARK_END, MARK_START, write_section

OTHER = "<!-- pool_micro:start -->\nthe pool micro-benchmark's section\n<!-- pool_micro:end -->\n"


def test_appends_the_section_when_the_page_has_none(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n" + OTHER)
    write_section(page, "first\n")
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\n" + OTHER)
    assert text.rstrip().endswith(f"{MARK_START}\nfirst\n{MARK_END}")


def test_replaces_only_its_own_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\n{OTHER}\n{MARK_START}\nold\n{MARK_END}\n\ntrailer\n")
    write_section(page, "new\n")
    assert page.read_text() == f"# Benchmarks\n\n{OTHER}\n{MARK_START}\nnew\n{MARK_END}\n\ntrailer\n"


def test_refuses_unbalanced_markers(tmp_path):
    page = tmp_path / "benchmarks.md"
    before = f"# Benchmarks\n{MARK_START}\nno end\n"
    page.write_text(before)
    with pytest.raises(SystemExit):
        write_section(page, "x\n")
    assert page.read_text() == before
