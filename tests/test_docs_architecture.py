"""docs/architecture.md stays a picture of the code: every Python name and every path it
cites in `code` spans exists (a renamed class or a moved module fails here, not in a
reader's head)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
SPANS = re.compile(r"`([^`\n]+)`")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*(\(\))?$")
PATH = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]*)+$")


def _source_words() -> set[str]:
    text = "\n".join(p.read_text() for p in (ROOT / "greenpool").rglob("*.py"))
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))


def test_every_python_name_the_page_cites_is_in_the_code():
    words = _source_words()
    cited = {
        span.removesuffix("()")
        for span in SPANS.findall(PAGE.read_text())
        if NAME.match(span) and not span.endswith((".md", ".py", ".toml", ".cfg"))
    }
    missing = sorted(name for name in cited if any(part not in words for part in name.split(".") if part))
    assert len(cited) > 50, cited  # the page does cite the code
    assert not missing, f"docs/architecture.md cites names the code does not have: {missing}"


def test_every_path_the_page_cites_exists():
    cited = {span for span in SPANS.findall(PAGE.read_text()) if PATH.match(span)}
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert len(cited) > 10, cited
    assert not missing, f"docs/architecture.md cites paths that do not exist: {missing}"
