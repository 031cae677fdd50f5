"""The docs quote real code: every block marked `<!-- quote: PATH -->` appears verbatim in PATH,
and every relative link points at a file that exists."""

from __future__ import annotations

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).parents[2] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
QUOTE = re.compile(r"<!-- quote: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)
LINK = re.compile(r"\]\((?P<target>[^)#:\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_quoted_code_is_the_code(page):
    for quote in QUOTE.finditer(page.read_text()):
        source = (DOCS / quote["path"]).read_text()
        assert quote["code"] in source, f"{page.name} quotes code that is not in {quote['path']}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for link in LINK.finditer(page.read_text()):
        assert (page.parent / link["target"]).exists(), f"{page.name} links to missing {link['target']}"


def test_the_connector_guide_quotes_something():
    assert len(QUOTE.findall((DOCS / "writing-a-connector.md").read_text())) >= 5
