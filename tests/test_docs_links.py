"""Every relative link of the Markdown documentation, and every ``docs/*.md`` that the code names,
points at a file that exists (anchors are not checked)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
FENCED_CODE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)
# [text](target) or [text](target "title"); the text may hold brackets, e.g. [`[CLS]`](...)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", flags=re.IGNORECASE)  # http:, https:, mailto:
DOCS_NAMED = re.compile(r"\bdocs/[A-Za-z0-9_./-]+\.md\b")


def relative_links(text: str) -> list[str]:
    """The targets of the Markdown links of ``text`` outside code, without anchors; external
    addresses and links within the page (``#anchor``) left out."""
    text = FENCED_CODE.sub("", text)
    targets = []
    for target in LINK.findall(text):
        if EXTERNAL.match(target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_relative_links_are_found() -> None:
    text = (
        'See [a](docs/a.md), [b](b.md#part), [`[CLS]`](c.md "title"), [w](https://x.org/y.md),\n'
        "[here](#top), [m](mailto:a@b.c).\n```bash\n[not](a/link.md)\n```\n"
    )
    assert relative_links(text) == ["docs/a.md", "b.md", "c.md"]


@pytest.mark.parametrize("page", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_every_relative_link_resolves(page: Path) -> None:
    missing = [
        target for target in relative_links(page.read_text()) if not (page.parent / target).exists()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_every_docs_page_the_code_names_exists() -> None:
    """Docstrings, messages and Markdown name pages as ``docs/NAME.md`` from the repository root
    (``bertgeom.__init__`` points at docs/definitions.md, for one)."""
    sources = [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "benchmarks").glob("*.py"),
        *(path for path in (ROOT / "tests").glob("*.py") if path.name != Path(__file__).name),
        *MARKDOWN,
    ]
    named = {
        (name, source.relative_to(ROOT).as_posix())
        for source in sources
        for name in DOCS_NAMED.findall(source.read_text())
    }
    assert named, "no docs/*.md named anywhere: the pattern is wrong"
    missing = sorted((name, where) for name, where in named if not (ROOT / name).exists())
    assert not missing, f"pages named but missing (page, where): {missing}"
