"""greenpool/backends/mysql/options.py: the generated reference stays in step."""

from pathlib import Path

from greenpool.backends.mysql.options import POOL_OPTIONS, markdown_reference

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_page_shows_the_generated_pool_option_table():
    text = DOC.read_text()
    section = text.split("<!-- pool-options:start -->\n", 1)[1].split("<!-- pool-options:end -->", 1)[0]
    assert section == markdown_reference(), "regenerate: python -m greenpool.backends.mysql.options"


def test_every_pool_option_has_a_default_and_help():
    for name, (default, help_text) in POOL_OPTIONS.items():
        assert help_text, name
