"""The docs cannot drift from their measurements: every generated page equals what its JSON renders to,
and the README stays a short guide whose links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.docs import render_all

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path,text", sorted(render_all().items()), ids=lambda v: getattr(v, "name", ""))
def test_a_generated_page_matches_its_json(path: Path, text: str) -> None:
    assert path.is_file(), f"{path} is missing: run `python -m bench.docs`"
    assert path.read_text() == text, f"{path.name} is stale against bench/results/: run `python -m bench.docs`"


def test_the_readme_is_a_short_guide_whose_links_resolve() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to {target}, which is not in the repository"


def test_every_docs_page_links_only_to_files_that_exist() -> None:
    for page in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
