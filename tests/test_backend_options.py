"""greenpool/backends/mysql/options.py: the generated reference stays in step."""

from pathlib import Path

from greenpool.backends.mysql.options import POOL_OPTIONS, markdown_reference, parse_pool_options

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def test_settings_page_shows_the_generated_pool_option_table():
    text = DOC.read_text()
    section = text.split("<!-- pool-options:start -->\n", 1)[1].split("<!-- pool-options:end -->", 1)[0]
    assert section == markdown_reference(), "regenerate: python -m greenpool.backends.mysql.options"


def test_pool_true_sets_every_option_to_the_default_the_docs_show():
    # docs/settings.md's table is generated from POOL_OPTIONS (test above).
    assert parse_pool_options("default", True) == {name: default for name, (default, _help) in POOL_OPTIONS.items()}
    assert all(help_text for _default, help_text in POOL_OPTIONS.values())
